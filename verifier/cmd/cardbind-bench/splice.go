package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// markers returns the comment lines that delimit a generated section.
func markers(section string) (begin, end string) {
	return "<!-- bench:" + section + " begin -->", "<!-- bench:" + section + " end -->"
}

// splice returns doc with the text between section's markers replaced by
// body. Without markers, the section is appended at the end.
func splice(doc, section, body string) (string, error) {
	begin, end := markers(section)
	body = strings.TrimRight(body, "\n") + "\n"
	i := strings.Index(doc, begin)
	if i < 0 {
		if strings.Contains(doc, end) {
			return "", fmt.Errorf("section %s: end marker without begin marker", section)
		}
		return strings.TrimRight(doc, "\n") + "\n\n" + begin + "\n" + body + end + "\n", nil
	}
	j := strings.Index(doc[i:], end)
	if j < 0 {
		return "", fmt.Errorf("section %s: begin marker without end marker", section)
	}
	j += i
	return doc[:i] + begin + "\n" + body + doc[j:], nil
}

// spliceCmd is "cardbind-bench splice": it replaces a marked section of a
// Markdown file with the contents of another file.
func spliceCmd(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("splice", flag.ContinueOnError)
	fs.SetOutput(stderr)
	doc := fs.String("doc", "docs/benchmarks.md", "Markdown file to update")
	section := fs.String("section", "", "section name (between <!-- bench:NAME begin --> and <!-- bench:NAME end -->)")
	from := fs.String("from", "", "file holding the section's new text")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *section == "" || *from == "" {
		return errors.New("splice: -section and -from are required")
	}
	body, err := os.ReadFile(*from)
	if err != nil {
		return fmt.Errorf("splice: %w", err)
	}
	old, err := os.ReadFile(*doc)
	if err != nil {
		return fmt.Errorf("splice: %w", err)
	}
	out, err := splice(string(old), *section, string(body))
	if err != nil {
		return fmt.Errorf("splice %s: %w", *doc, err)
	}
	if err := os.WriteFile(*doc, []byte(out), 0o644); err != nil {
		return fmt.Errorf("splice: %w", err)
	}
	return nil
}
