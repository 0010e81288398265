package modem

import (
	"os/exec"
	"strings"
	"testing"
)

// The simulator must behave like the outside world, so it shares no code
// with the agent (a bug in both would hide itself). Only firmware-sim/fleet,
// which drives the real agent against simulated modems, may import both.
func TestDepsNoAgent(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command to list dependencies with")
	}
	pkgs := []string{
		"github.com/cardbind/cardbind/firmware-sim/modem",
		"github.com/cardbind/cardbind/firmware-sim/modem/control",
		"github.com/cardbind/cardbind/firmware-sim/modem/ptyhost",
		"github.com/cardbind/cardbind/firmware-sim/network",
	}
	out, err := exec.Command(goTool, append([]string{"list", "-deps", "-test", "-f", "{{.ImportPath}}"}, pkgs...)...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < len(pkgs) {
		t.Fatalf("go list gave %d packages for %d", len(deps), len(pkgs))
	}
	for _, d := range deps {
		if d == "github.com/cardbind/cardbind/agent" || strings.HasPrefix(d, "github.com/cardbind/cardbind/agent/") {
			t.Errorf("firmware-sim depends on agent package %s", d)
		}
	}
}
