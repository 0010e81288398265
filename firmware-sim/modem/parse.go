package modem

import (
	"errors"
	"strings"
)

// form is the syntactic form of one command in a command line.
type form int

const (
	formExec form = iota // AT+CGSN, ATE0, ATZ
	formRead             // AT+CPIN?, ATS3?
	formTest             // AT+CREG=?
	formSet              // AT+CMEE=2, ATS3=13
)

// String returns a short name of the form, for logs and test failures.
func (f form) String() string {
	switch f {
	case formExec:
		return "exec"
	case formRead:
		return "read"
	case formTest:
		return "test"
	case formSet:
		return "set"
	}
	return "?"
}

// command is one command of an AT command line.
//
// Name is upper case: "+CGSN", "^ICCID", "E", "&F", "S3", "D". Arg holds the
// digits of a basic command ("0" in "E0"), the text after '=' of an extended
// or S-register set command, or the dial string of D. Quoted text keeps its
// case; everything else is upper-cased.
type command struct {
	Name string
	Form form
	Arg  string
}

// errSyntax reports a command line that V.250 cannot split into commands.
var errSyntax = errors.New("syntax error")

// extendedPrefix reports whether c starts an extended command name.
func extendedPrefix(c byte) bool {
	return strings.IndexByte("+^#!$%*", c) >= 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isAlnum(c byte) bool {
	return isDigit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'
}

func upper(c byte) byte {
	if c >= 'a' && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}

// upperUnquoted upper-cases s outside double quotes. ok is false when a
// quote is left open.
func upperUnquoted(s string) (string, bool) {
	b := []byte(s)
	quoted := false
	for i, c := range b {
		switch {
		case c == '"':
			quoted = !quoted
		case !quoted:
			b[i] = upper(c)
		}
	}
	return string(b), !quoted
}

// parseCommandLine splits the body of a command line (the text after "AT")
// into commands, following V.250: basic commands may follow each other
// directly ("E0V1"), extended commands are separated by ';', spaces outside
// quotes are ignored and D takes the rest of the line.
func parseCommandLine(body string) ([]command, error) {
	var cmds []command
	i := 0
	for i < len(body) {
		c := body[i]
		switch {
		case c == ' ' || c == ';':
			i++
		case extendedPrefix(c):
			j := i + 1
			for j < len(body) && isAlnum(body[j]) {
				j++
			}
			if j == i+1 {
				return nil, errSyntax
			}
			name, _ := upperUnquoted(body[i:j])
			k := j
			quoted := false
			for k < len(body) && (quoted || body[k] != ';') {
				if body[k] == '"' {
					quoted = !quoted
				}
				k++
			}
			if quoted {
				return nil, errSyntax
			}
			cmd, err := extendedForm(name, strings.TrimSpace(body[j:k]))
			if err != nil {
				return nil, err
			}
			cmds = append(cmds, cmd)
			i = k
		case c == '&':
			if i+1 >= len(body) || !isAlnum(body[i+1]) || isDigit(body[i+1]) {
				return nil, errSyntax
			}
			name := "&" + string(upper(body[i+1]))
			j := i + 2
			for j < len(body) && isDigit(body[j]) {
				j++
			}
			cmds = append(cmds, command{Name: name, Form: formExec, Arg: body[i+2 : j]})
			i = j
		case upper(c) == 'S':
			j := i + 1
			for j < len(body) && isDigit(body[j]) {
				j++
			}
			if j == i+1 || j >= len(body) {
				return nil, errSyntax
			}
			name := "S" + body[i+1:j]
			switch {
			case body[j] == '?':
				cmds = append(cmds, command{Name: name, Form: formRead})
				i = j + 1
			case body[j] == '=':
				k := j + 1
				for k < len(body) && isDigit(body[k]) {
					k++
				}
				cmds = append(cmds, command{Name: name, Form: formSet, Arg: body[j+1 : k]})
				i = k
			default:
				return nil, errSyntax
			}
		case upper(c) == 'D':
			arg, _ := upperUnquoted(strings.TrimSpace(body[i+1:]))
			cmds = append(cmds, command{Name: "D", Form: formExec, Arg: arg})
			i = len(body)
		case (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'):
			j := i + 1
			for j < len(body) && isDigit(body[j]) {
				j++
			}
			cmds = append(cmds, command{Name: string(upper(c)), Form: formExec, Arg: body[i+1 : j]})
			i = j
		default:
			return nil, errSyntax
		}
	}
	return cmds, nil
}

// extendedForm classifies the text after an extended command name.
func extendedForm(name, rest string) (command, error) {
	switch {
	case rest == "":
		return command{Name: name, Form: formExec}, nil
	case rest == "?":
		return command{Name: name, Form: formRead}, nil
	case strings.HasPrefix(rest, "="):
		arg := strings.TrimSpace(rest[1:])
		if arg == "?" {
			return command{Name: name, Form: formTest}, nil
		}
		up, ok := upperUnquoted(arg)
		if !ok {
			return command{}, errSyntax
		}
		return command{Name: name, Form: formSet, Arg: up}, nil
	}
	return command{}, errSyntax
}

// splitArgs splits the argument of a set command on commas outside quotes
// and trims spaces and quotes from each field. It returns at least one
// field (empty for an empty arg).
func splitArgs(arg string) []string {
	var out []string
	quoted := false
	start := 0
	for i := 0; i < len(arg); i++ {
		switch arg[i] {
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, trimField(arg[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, trimField(arg[start:]))
}

func trimField(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		s = s[1 : len(s)-1]
	}
	return s
}

// findAT returns the index just after the "AT" prefix of a command line, or
// -1 when the line holds no "AT". Anything before it is line noise, which a
// modem ignores.
func findAT(line string) int {
	for i := 0; i+1 < len(line); i++ {
		if upper(line[i]) == 'A' && upper(line[i+1]) == 'T' {
			return i + 2
		}
	}
	return -1
}
