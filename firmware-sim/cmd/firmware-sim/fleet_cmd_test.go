package main

import (
	"bytes"
	"errors"
	"flag"
	"path/filepath"
	"strings"
	"testing"
)

func TestFleetUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"fleet", "--help"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("fleet --help: %v", err)
	}
	for _, want := range []string{"REAL agent", "--swap-rate", "-source-addrs", "ulimit -n"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("fleet --help lacks %q", want)
		}
	}
	tests := []struct {
		args    []string
		wantErr string // "" means a usage error
	}{
		{[]string{"fleet"}, ""},
		{[]string{"fleet", "--devices", "0"}, ""},
		{[]string{"fleet", "--devices", "2", "extra"}, ""},
		{[]string{"fleet", "--devices", "2", "--token-file", filepath.Join(t.TempDir(), "none")}, "--token-file"},
	}
	for _, tc := range tests {
		t.Setenv("CARDBIND_TOKEN", "")
		err := run(t.Context(), tc.args, &stdout, &stderr)
		switch {
		case tc.wantErr == "" && !errors.Is(err, errUsage):
			t.Errorf("%v: %v, want a usage error", tc.args, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: %v, want an error about %s", tc.args, err, tc.wantErr)
		}
	}
}
