package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
)

func TestSplice(t *testing.T) {
	doc := "# B\n\nhand\n\n<!-- bench:v begin -->\nold\n<!-- bench:v end -->\n\ntail\n"
	got, err := splice(doc, "v", "new\nlines\n\n")
	if err != nil {
		t.Fatal(err)
	}
	want := "# B\n\nhand\n\n<!-- bench:v begin -->\nnew\nlines\n<!-- bench:v end -->\n\ntail\n"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	again, err := splice(got, "v", "new\nlines\n")
	if err != nil || again != got {
		t.Errorf("splicing the same text again changed the file: %q, %v", again, err)
	}
	appended, err := splice("# B\n", "w", "x")
	if err != nil || appended != "# B\n\n<!-- bench:w begin -->\nx\n<!-- bench:w end -->\n" {
		t.Errorf("append: %q, %v", appended, err)
	}
	for _, bad := range []string{"<!-- bench:v begin -->\nno end\n", "no begin\n<!-- bench:v end -->\n"} {
		if _, err := splice(bad, "v", "x"); err == nil {
			t.Errorf("splice(%q) did not fail", bad)
		}
	}
}

func TestMetricValue(t *testing.T) {
	text := `# HELP cardbind_reports_total Agent reports, by outcome.
# TYPE cardbind_reports_total counter
cardbind_reports_total{outcome="accepted"} 1.2345e+06
cardbind_reports_total{outcome="accepted_x"} 7
cardbind_reports_total{outcome="forged"} 3
`
	for series, want := range map[string]float64{
		`cardbind_reports_total{outcome="accepted"}`: 1234500,
		`cardbind_reports_total{outcome="forged"}`:   3,
	} {
		if v, ok := metricValue(text, series); !ok || v != want {
			t.Errorf("%s = %v, %v; want %v", series, v, ok, want)
		}
	}
	if _, ok := metricValue(text, `cardbind_reports_total{outcome="replayed"}`); ok {
		t.Error("found a series that is not there")
	}
}

func TestSteadyRate(t *testing.T) {
	// 1000 reports: 100 by 1 s, then 1000/s steady until 900 at 1.8 s.
	s := []sample{{0, 0}, {time.Second, 100}, {1800 * time.Millisecond, 900}, {3 * time.Second, 1000}}
	if got := steadyRate(s, 1000); got < 999 || got > 1001 {
		t.Errorf("steady rate %v, want 1000", got)
	}
	if got := steadyRate(s[:2], 1000); got != 0 {
		t.Errorf("steady rate of an unfinished run %v, want 0", got)
	}
}

func TestPercentile(t *testing.T) {
	var xs []time.Duration
	for i := 1; i <= 200; i++ {
		xs = append(xs, time.Duration(201-i)*time.Millisecond)
	}
	d := summarize(xs)
	if d.N != 200 || d.P50 != 100*time.Millisecond || d.P90 != 180*time.Millisecond || d.P99 != 198*time.Millisecond || d.Max != 200*time.Millisecond || d.Min != time.Millisecond {
		t.Errorf("summary %+v", d)
	}
	if got := percentile(nil, 99); got != 0 {
		t.Errorf("percentile of nothing %v", got)
	}
}

func TestHistSteps(t *testing.T) {
	xys := histSteps([]float64{0.5, 1.5, 1.7, 9}, 1, 9)
	var total float64
	for i := 1; i+1 < len(xys); i += 2 {
		total += xys[i].Y
	}
	if total != 4 {
		t.Errorf("histogram holds %v values, want 4: %v", total, xys)
	}
	if w := niceWidth(0.37); w != 0.5 {
		t.Errorf("niceWidth(0.37) = %v", w)
	}
	if w := niceWidth(13); w != 20 {
		t.Errorf("niceWidth(13) = %v", w)
	}
}

func TestLuhnIdentifiers(t *testing.T) {
	// 35693803564380 is the TAC+serial of a published example IMEI whose
	// check digit is 9.
	if got := gatewayIMEI(564380); got != "356938035643809" {
		t.Errorf("gatewayIMEI = %s", got)
	}
	if imei := gatewayIMEI(7); len(imei) != 15 || !strings.HasPrefix(imei, "35693803") {
		t.Errorf("gateway IMEI %s", imei)
	}
	if iccid := cardICCID(7); len(iccid) != 20 {
		t.Errorf("ICCID %s", iccid)
	}
}

func TestIdentifiersParse(t *testing.T) {
	for i := range 300 {
		if _, err := protocol.ParseIMEI(gatewayIMEI(i)); err != nil {
			t.Fatalf("gateway %d: %v", i, err)
		}
		if _, err := protocol.ParseICCID(cardICCID(i)); err != nil {
			t.Fatalf("card %d: %v", i, err)
		}
		if _, err := protocol.ParseIMSI(cardIMSI(i)); err != nil {
			t.Fatalf("card %d: %v", i, err)
		}
	}
}

func TestLogErrors(t *testing.T) {
	tests := []struct {
		name, log string
		n         int
		first     string
	}{
		{"none", "time=1 level=INFO msg=a\ntime=2 level=WARN msg=b\n", 0, ""},
		{"text", "level=INFO msg=a\nlevel=ERROR msg=\"report failed; retrying\"\nlevel=ERROR msg=c\n", 2, `level=ERROR msg="report failed; retrying"`},
		{"json", `{"level":"ERROR","msg":"x"}` + "\n", 1, `{"level":"ERROR","msg":"x"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "v.log")
			if err := os.WriteFile(path, []byte(tt.log), 0o644); err != nil {
				t.Fatal(err)
			}
			if n, first := logErrors(path); n != tt.n || first != tt.first {
				t.Errorf("logErrors = %d, %q; want %d, %q", n, first, tt.n, tt.first)
			}
		})
	}
	if n, _ := logErrors(filepath.Join(t.TempDir(), "missing")); n != 0 {
		t.Errorf("missing log: %d errors", n)
	}
}

// Swaps made after the background ran out are left out of the figures,
// unless no swap ran under load.
func TestUnderLoad(t *testing.T) {
	s := func(ms int, loaded bool) swapSample {
		return swapSample{Decision: time.Duration(ms) * time.Millisecond, Loaded: loaded}
	}
	tests := []struct {
		name  string
		swaps []swapSample
		want  int
	}{
		{"all loaded", []swapSample{s(1, true), s(2, true)}, 2},
		{"background ran out", []swapSample{s(1, true), s(2, true), s(3, false)}, 2},
		{"no background", []swapSample{s(1, false), s(2, false)}, 2},
		{"none", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := underLoad(&latencyRun{Swaps: tt.swaps}); len(got) != tt.want {
				t.Errorf("%d swaps counted, want %d", len(got), tt.want)
			}
		})
	}
	rows := latencyRows(&latencyRun{Swaps: []swapSample{s(10, true), s(5000, false)}})
	for _, r := range rows {
		if r.name == "decision (the history entry's time)" && r.d.Max != 10*time.Millisecond {
			t.Errorf("decision max %v counts a swap made without load", r.d.Max)
		}
	}
}
