package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestNetworkFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--radius", "127.0.0.1:1813"}, "--radius needs --radius-secret"},
		{[]string{"--eir", "ftp://x"}, "--eir"},
		{[]string{"--eir", "127.0.0.1:8080"}, "want http(s)://host:port"},
		{[]string{"--cell", "460-03-6699"}, "--cell"},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		args := append([]string{"network", "--listen", "127.0.0.1:0"}, tt.args...)
		err := run(t.Context(), args, &stdout, &stderr)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: %v, want an error with %q", tt.args, err, tt.want)
		}
	}
}
