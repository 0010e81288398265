// Package ptyhost serves a simulated modem on a pseudo-terminal, so that any
// serial program (the cardbind agent, picocom, go.bug.st/serial) can open it
// like /dev/ttyUSB2.
//
// The host creates a pty, puts the device side into raw mode at once (else
// the line discipline echoes and translates the modem's output), keeps its
// own descriptor of the device side open (else reads on the master fail with
// EIO whenever no client has the port open) and makes a stable symlink point
// at it. When the modem reboots, the pty and the link go away for the reboot
// time and a fresh pty appears at the same link, as a USB modem re-enumerates.
package ptyhost

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/cardbind/cardbind/firmware-sim/modem"
)

// Config configures a host.
type Config struct {
	// Link is the path of the symlink to the device side of the pty. An
	// existing symlink is replaced; any other file there is an error.
	Link string
	// Logger receives the host's logs; nil discards them.
	Logger *slog.Logger
	// OnUp, if set, is called each time a pty is ready at Link, with the
	// name of its device side (/dev/pts/N).
	OnUp func(tty string)
	// OnDown, if set, is called each time the pty goes away.
	OnDown func()
}

// Run serves m on a pseudo-terminal at cfg.Link until ctx is done, then
// removes the link. Reboots of the modem recreate the pty at the same link.
func Run(ctx context.Context, m *modem.Modem, cfg Config) error {
	if cfg.Link == "" {
		return errors.New("ptyhost: no link path")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for {
		p, err := open(cfg.Link)
		if err != nil {
			return err
		}
		log.Info("pty up", "link", cfg.Link, "tty", p.name)
		if cfg.OnUp != nil {
			cfg.OnUp(p.name)
		}
		serr := m.Serve(ctx, p)
		p.close()
		log.Info("pty down", "link", cfg.Link, "tty", p.name)
		if cfg.OnDown != nil {
			cfg.OnDown()
		}
		var rb *modem.RebootError
		switch {
		case errors.As(serr, &rb):
			t := time.NewTimer(rb.DownFor)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		case ctx.Err() != nil:
			return nil
		case serr != nil:
			return fmt.Errorf("ptyhost: %w", serr)
		default:
			return nil
		}
	}
}

// port is one pseudo-terminal incarnation, seen from the modem's side.
type port struct {
	master, slave *os.File
	name, link    string
}

func open(link string) (*port, error) {
	ptmx, slave, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("ptyhost: open pty: %w", err)
	}
	master, err := pollable(ptmx)
	if err != nil {
		_ = slave.Close()
		return nil, err
	}
	p := &port{master: master, slave: slave, name: slave.Name(), link: link}
	if _, err := term.MakeRaw(int(slave.Fd())); err != nil {
		p.closeFiles()
		return nil, fmt.Errorf("ptyhost: raw mode on %s: %w", p.name, err)
	}
	if err := makeLink(p.name, link); err != nil {
		p.closeFiles()
		return nil, err
	}
	return p, nil
}

// pollable returns the pty master as a non-blocking file that the Go
// runtime polls, so that read deadlines can interrupt a pending Read. f is
// closed.
func pollable(f *os.File) (*os.File, error) {
	defer f.Close()
	fd, err := unix.Dup(int(f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("ptyhost: dup pty master: %w", err)
	}
	unix.CloseOnExec(fd)
	if err := unix.SetNonblock(fd, true); err != nil {
		_ = unix.Close(fd)
		return nil, fmt.Errorf("ptyhost: pty master non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// makeLink points link at target, atomically replacing an old symlink.
func makeLink(target, link string) error {
	if fi, err := os.Lstat(link); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		return fmt.Errorf("ptyhost: %s exists and is not a symlink", link)
	}
	tmp := filepath.Join(filepath.Dir(link), fmt.Sprintf(".%s.%d.tmp", filepath.Base(link), os.Getpid()))
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("ptyhost: link: %w", err)
	}
	if err := os.Rename(tmp, link); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("ptyhost: link: %w", err)
	}
	return nil
}

// drainTimeout bounds the wait for a client to read the last output (such
// as the OK of AT+CFUN=1,1) before the pty hangs up, which discards it.
const drainTimeout = 300 * time.Millisecond

// close removes the link (if it still points here) and closes the pty:
// clients holding the port open see it hang up.
func (p *port) close() {
	if target, err := os.Readlink(p.link); err == nil && target == p.name {
		_ = os.Remove(p.link)
	}
	// Bytes written to the master reach the slave's queue asynchronously:
	// give them a moment, then wait until the queue stays empty.
	fd := int(p.slave.Fd())
	empty := 0
	for deadline := time.Now().Add(drainTimeout); empty < 3 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		n, err := unix.IoctlGetInt(fd, unix.TIOCINQ)
		switch {
		case err != nil:
			empty = 3
		case n == 0:
			empty++
		default:
			empty = 0
		}
	}
	p.closeFiles()
}

func (p *port) closeFiles() {
	_ = p.master.Close()
	_ = p.slave.Close()
}

// Read reads what clients wrote to the port.
func (p *port) Read(b []byte) (int, error) { return p.master.Read(b) }

// SetReadDeadline lets Serve interrupt a pending Read.
func (p *port) SetReadDeadline(t time.Time) error { return p.master.SetReadDeadline(t) }

// portWriteTimeout bounds a write that cannot proceed because nobody reads
// the port and its buffer is full.
const portWriteTimeout = 500 * time.Millisecond

// Write sends modem output to the port. Output nobody reads piles up in the
// pty; when it is full the stale bytes are flushed, as they would be lost on
// a real serial line, and the write is tried once more.
func (p *port) Write(b []byte) (int, error) {
	var n int
	for attempt := 0; ; attempt++ {
		_ = p.master.SetWriteDeadline(time.Now().Add(portWriteTimeout))
		k, err := p.master.Write(b[n:])
		n += k
		if err == nil || attempt > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		_ = unix.IoctlSetInt(int(p.slave.Fd()), unix.TCFLSH, unix.TCIFLUSH)
	}
}
