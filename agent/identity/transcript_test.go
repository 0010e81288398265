package identity

import (
	"context"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/agent/at"
)

// silent is a transcript reply meaning "the modem says nothing".
const silent = "<silent>"

// transcript is what a real modem answered, command by command, byte for byte
// (CR LF framing, echo, URCs and all). A command with several replies gives
// them in turn and then repeats the last; unknown commands get ERROR.
type transcript struct {
	echo    bool
	replies map[string][]string
}

// transcriptPort plays a transcript on an in-memory port, in order.
type transcriptPort struct {
	tr transcript

	mu      sync.Mutex
	sent    []string
	calls   map[string]int
	partial []byte

	pr   *io.PipeReader
	pw   *io.PipeWriter
	out  chan string
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newTranscriptPort(t testing.TB, tr transcript) *transcriptPort {
	pr, pw := io.Pipe()
	p := &transcriptPort{tr: tr, calls: map[string]int{}, pr: pr, pw: pw,
		out: make(chan string, 64), done: make(chan struct{})}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			select {
			case <-p.done:
				return
			case s := <-p.out:
				if _, err := pw.Write([]byte(s)); err != nil {
					return
				}
			}
		}
	}()
	t.Cleanup(func() { _ = p.Close(); p.wg.Wait() })
	return p
}

func (p *transcriptPort) Read(b []byte) (int, error) { return p.pr.Read(b) }

func (p *transcriptPort) Write(b []byte) (int, error) {
	p.mu.Lock()
	var cmds []string
	for _, c := range b {
		switch c {
		case '\r':
			cmds = append(cmds, string(p.partial))
			p.partial = p.partial[:0]
		case '\n':
		default:
			p.partial = append(p.partial, c)
		}
	}
	var outs []string
	for _, cmd := range cmds {
		p.sent = append(p.sent, cmd)
		if p.tr.echo {
			outs = append(outs, cmd+"\r")
		}
		outs = append(outs, p.reply(cmd))
	}
	p.mu.Unlock()
	for _, s := range outs {
		if s == silent {
			continue
		}
		select {
		case p.out <- s:
		case <-p.done:
			return 0, io.ErrClosedPipe
		}
	}
	return len(b), nil
}

func (p *transcriptPort) reply(cmd string) string {
	if rs, ok := p.tr.replies[cmd]; ok && len(rs) > 0 {
		n := p.calls[cmd]
		p.calls[cmd]++
		return rs[min(n, len(rs)-1)]
	}
	switch cmd {
	case "AT+CMEE?":
		return "\r\n+CMEE: 1\r\n\r\nOK\r\n"
	case "AT":
		return "\r\nOK\r\n"
	}
	return "\r\nERROR\r\n"
}

func (p *transcriptPort) Close() error {
	p.once.Do(func() {
		close(p.done)
		p.pw.CloseWithError(io.ErrClosedPipe)
	})
	return p.pr.Close()
}

func (p *transcriptPort) commands() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.sent)
}

// engineFor runs an at.Engine over a transcript, with short timeouts.
func engineFor(t testing.TB, tr transcript) (*at.Engine, *transcriptPort) {
	p := newTranscriptPort(t, tr)
	e := at.New(p, at.WithDefaultTimeout(300*time.Millisecond), at.WithResyncTimeout(50*time.Millisecond),
		at.WithURCPrefixes(URCPrefixes()...))
	t.Cleanup(func() { _ = e.Close() })
	return e, p
}

// runOne runs one command against a one-command transcript and returns the
// engine's error.
func runOne(t *testing.T, cmd, reply string) error {
	t.Helper()
	e, _ := engineFor(t, transcript{replies: map[string][]string{cmd: {reply}}})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err := e.Command(ctx, cmd)
	return err
}

// ok wraps information lines in V.250 framing with a final OK.
func ok(lines ...string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString("\r\n" + l + "\r\n")
	}
	b.WriteString("\r\nOK\r\n")
	return b.String()
}

// r is shorthand for a single reply.
func r(s string) []string { return []string{s} }
