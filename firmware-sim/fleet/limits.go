package fleet

import (
	"fmt"
	"syscall"
)

// FileLimit is the process's open-file limit after RaiseFileLimit.
type FileLimit struct {
	Soft, Hard uint64
	// Need is what was asked for.
	Need uint64
}

// Enough reports whether the limit covers what was asked for.
func (l FileLimit) Enough() bool { return l.Soft >= l.Need }

// String says what the fleet got.
func (l FileLimit) String() string {
	s := fmt.Sprintf("open-file limit %d (hard %d) for %d wanted", l.Soft, l.Hard, l.Need)
	if !l.Enough() {
		s += fmt.Sprintf(": at most about %d sessions; raise the hard limit (ulimit -Hn as root, LimitNOFILE=) or run several fleet processes", l.Soft-min(l.Soft, fileMargin))
	}
	return s
}

// fileMargin is what the process needs beside its sessions: outbox files,
// HTTP, the runtime.
const fileMargin = 512

// FilesFor is the open-file limit a fleet of devices gateways needs: one
// socket per MQTT session (the serial lines are in memory), plus a margin.
func FilesFor(devices int) uint64 { return uint64(devices) + fileMargin }

// RaiseFileLimit raises RLIMIT_NOFILE towards need: the soft limit to the
// hard one, and both to need when the process may (CAP_SYS_RESOURCE). It
// returns what it got.
func RaiseFileLimit(need uint64) (FileLimit, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return FileLimit{Need: need}, fmt.Errorf("read the open-file limit: %w", err)
	}
	if lim.Max < need {
		want := syscall.Rlimit{Cur: need, Max: need}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
			lim = want
		}
	}
	if lim.Cur < min(need, lim.Max) {
		want := syscall.Rlimit{Cur: min(need, lim.Max), Max: lim.Max}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			return FileLimit{Soft: lim.Cur, Hard: lim.Max, Need: need}, fmt.Errorf("raise the open-file limit: %w", err)
		}
		lim = want
	}
	return FileLimit{Soft: lim.Cur, Hard: lim.Max, Need: need}, nil
}
