package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// machine describes where the bench ran.
type machine struct {
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model"`
	MemTotal  int64  `json:"mem_total"`
	Kernel    string `json:"kernel"`
	GoVersion string `json:"go_version"`
	LoadAvg   string `json:"load_avg"` // at the start
}

func readMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) >= 3 {
			m.LoadAvg = strings.Join(f[:3], " ")
		}
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fs := strings.Fields(sc.Text()); len(fs) >= 2 && fs[0] == "MemTotal:" {
				kb, _ := strconv.ParseInt(fs[1], 10, 64)
				m.MemTotal = kb << 10
				break
			}
		}
		f.Close()
	}
	return m
}

// pair is one round's bare and verifier runs.
type pair struct {
	round          int
	bare, verifier *throughputRun
}

func pairs(runs []throughputRun) []pair {
	var out []pair
	for i := range runs {
		r := &runs[i]
		if len(out) == 0 || out[len(out)-1].round != r.Round {
			out = append(out, pair{round: r.Round})
		}
		p := &out[len(out)-1]
		if r.Target == "bare" {
			p.bare = r
		} else {
			p.verifier = r
		}
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// ratios returns, over the rounds, the verifier/bare ratios of the whole
// run and of the steady part, and the medians of each target's rates.
type throughputSummary struct {
	BareRate, VerifierRate, Ratio      float64 // medians over the rounds
	BareSteady, VerifierSteady, SRatio float64
	BareCPU, VerifierCPU, LoadCPU      time.Duration // per report, medians
	BareLoadCPU                        time.Duration
}

func summarizeThroughput(runs []throughputRun) throughputSummary {
	var br, vr, r, bs, vs, sr, bc, vc, lc, blc []float64
	for _, p := range pairs(runs) {
		if p.bare == nil || p.verifier == nil {
			continue
		}
		br, vr = append(br, p.bare.Rate), append(vr, p.verifier.Rate)
		r = append(r, p.verifier.Rate/p.bare.Rate)
		bs, vs = append(bs, p.bare.Steady), append(vs, p.verifier.Steady)
		if p.bare.Steady > 0 {
			sr = append(sr, p.verifier.Steady/p.bare.Steady)
		}
		bc = append(bc, float64(p.bare.ServerCPU)/float64(p.bare.Reports))
		vc = append(vc, float64(p.verifier.ServerCPU)/float64(p.verifier.Reports))
		lc = append(lc, float64(p.verifier.LoadCPU)/float64(p.verifier.Reports))
		blc = append(blc, float64(p.bare.LoadCPU)/float64(p.bare.Reports))
	}
	return throughputSummary{BareRate: median(br), VerifierRate: median(vr), Ratio: median(r),
		BareSteady: median(bs), VerifierSteady: median(vs), SRatio: median(sr),
		BareCPU: time.Duration(median(bc)), VerifierCPU: time.Duration(median(vc)),
		LoadCPU: time.Duration(median(lc)), BareLoadCPU: time.Duration(median(blc))}
}

func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 1, 64) }

func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func mib(b int64) string { return strconv.FormatInt(b>>20, 10) + " MiB" }

// underLoad returns the swaps made while the background load ran (all of
// them when none was: a run without background).
func underLoad(l *latencyRun) []swapSample {
	var loaded []swapSample
	for _, s := range l.Swaps {
		if s.Loaded {
			loaded = append(loaded, s)
		}
	}
	if len(loaded) == 0 {
		return l.Swaps
	}
	return loaded
}

// latencyRows returns the rows of the latency table: name, distribution.
func latencyRows(l *latencyRun) []struct {
	name string
	d    dist
} {
	pick := func(f func(swapSample) time.Duration) dist {
		var xs []time.Duration
		for _, s := range underLoad(l) {
			if v := f(s); v != 0 {
				xs = append(xs, v)
			}
		}
		return summarize(xs)
	}
	rows := []struct {
		name string
		d    dist
	}{
		{"PUBACK to the gateway", pick(func(s swapSample) time.Duration { return s.PubAck })},
		{"decision (the history entry's time)", pick(func(s swapSample) time.Duration { return s.Decision })},
		{"block applied at the network", pick(func(s swapSample) time.Duration { return s.Block })},
		{"`blocked` alert at the MQTT subscriber", pick(func(s swapSample) time.Duration { return s.Alert })},
	}
	if l.Events {
		rows = append(rows, struct {
			name string
			d    dist
		}{"CloudEvent at the HTTPS sink", pick(func(s swapSample) time.Duration { return s.Event })})
	}
	rows = append(rows, struct {
		name string
		d    dist
	}{"return: resume applied at the network", pick(func(s swapSample) time.Duration { return s.Resume })})
	return rows
}

func printSummary(w io.Writer, res *results) {
	fmt.Fprintf(w, "machine: %d CPUs (%s), %s RAM, Linux %s, %s, load average at start %s\n",
		res.Machine.CPUs, res.Machine.CPUModel, mib(res.Machine.MemTotal), res.Machine.Kernel, res.Machine.GoVersion, res.Machine.LoadAvg)
	fmt.Fprintf(w, "payload: %d bytes (a signed heartbeat)\n\n", res.PayloadSize)
	fmt.Fprintln(w, "round  bare reports/s  verifier reports/s  ratio  (steady: bare  verifier  ratio)")
	for _, p := range pairs(res.Throughput) {
		if p.bare == nil || p.verifier == nil {
			continue
		}
		fmt.Fprintf(w, "%5d  %14.0f  %18.0f  %5.2f  (%.0f  %.0f  %.2f)\n", p.round, p.bare.Rate, p.verifier.Rate,
			p.verifier.Rate/p.bare.Rate, p.bare.Steady, p.verifier.Steady, p.verifier.Steady/p.bare.Steady)
	}
	s := summarizeThroughput(res.Throughput)
	fmt.Fprintf(w, "median %13.0f  %18.0f  %5.2f  (%.0f  %.0f  %.2f)   target ratio >= 0.70\n", s.BareRate, s.VerifierRate, s.Ratio,
		s.BareSteady, s.VerifierSteady, s.SRatio)
	fmt.Fprintf(w, "CPU per report: verifier %v, bare broker %v; load generator %v (verifier runs), %v (bare runs)\n",
		s.VerifierCPU.Round(100*time.Nanosecond), s.BareCPU.Round(100*time.Nanosecond), s.LoadCPU.Round(100*time.Nanosecond), s.BareLoadCPU.Round(100*time.Nanosecond))
	fmt.Fprintf(w, "peak RSS: verifier %s, bare broker %s\n", mib(res.VerifierRSS), mib(res.BareRSS))
	if res.Refused > 0 {
		fmt.Fprintf(w, "WARNING: the verifier refused %d reports\n", res.Refused)
	}
	if l := res.Latency; l != nil {
		fmt.Fprintf(w, "\nswaps: %d, background %.0f reports/s asked, %.0f/s processed, over %v\n", len(l.Swaps), l.TargetRate, l.BackgroundRate, l.Duration.Round(time.Millisecond))
		if res.LatencyNote != "" {
			fmt.Fprintln(w, res.LatencyNote)
		}
		if l.PoolExhausted {
			fmt.Fprintf(w, "WARNING: the background reports ran out before the last swap; the bench stopped after the %d swaps made under load\n", len(underLoad(l)))
		}
		fmt.Fprintln(w, "latency from the publish (ms)                 p50     p90     p99     max")
		for _, r := range latencyRows(l) {
			fmt.Fprintf(w, "%-44s %7s %7s %7s %7s\n", r.name, ms(r.d.P50), ms(r.d.P90), ms(r.d.P99), ms(r.d.Max))
		}
	}
}

// markdown renders the results as the generated section of
// docs/benchmarks.md.
func markdown(res *results, o options, plots []string) string {
	var b strings.Builder
	m := res.Machine
	mode := ""
	if o.label != "" {
		mode = " (" + o.label + " mode)"
	}
	fmt.Fprintf(&b, "### Run of %s%s\n\n", res.Started.Format("2006-01-02 15:04 UTC"), mode)
	fmt.Fprintf(&b, "```\n%s\n```\n\n", o.command)
	fmt.Fprintf(&b, "Machine: %d CPUs (%s), %s RAM, Linux %s, %s; load average at the start %s. "+
		"Load generator, verifier and bare broker share the machine.\n\n",
		m.CPUs, m.CPUModel, gib(m.MemTotal), m.Kernel, m.GoVersion, m.LoadAvg)

	s := summarizeThroughput(res.Throughput)
	fmt.Fprintf(&b, "#### Verified reports per second vs bare nats-server\n\n")
	fmt.Fprintf(&b, "%d gateways, each with its own key and MQTT connection, %d QoS 1 publishes in flight per connection; "+
		"%s signed heartbeats of %d bytes per run.\n\n", o.devices, o.window, thousands(float64(res.Throughput[0].Reports)), res.PayloadSize)
	b.WriteString("| round | bare nats-server (reports/s) | verifier (reports/s) | ratio | steady 10–90 %: bare | verifier | ratio |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, p := range pairs(res.Throughput) {
		if p.bare == nil || p.verifier == nil {
			continue
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %.2f | %s | %s | %.2f |\n", p.round, thousands(p.bare.Rate), thousands(p.verifier.Rate),
			p.verifier.Rate/p.bare.Rate, thousands(p.bare.Steady), thousands(p.verifier.Steady), p.verifier.Steady/p.bare.Steady)
	}
	verdict := "met"
	if s.Ratio < 0.7 {
		verdict = "**missed**"
	}
	fmt.Fprintf(&b, "| **median** | %s | %s | **%.2f** | %s | %s | %.2f |\n\n", thousands(s.BareRate), thousands(s.VerifierRate), s.Ratio,
		thousands(s.BareSteady), thousands(s.VerifierSteady), s.SRatio)
	fmt.Fprintf(&b, "Target ratio ≥ 0.7: %s. ", verdict)
	fmt.Fprintf(&b, "CPU time per report (median): verifier process %s µs, bare broker %s µs; "+
		"the load generator spent %s µs per report on its side. Peak RSS: verifier %s, bare broker %s.\n\n",
		us(s.VerifierCPU), us(s.BareCPU), us(s.LoadCPU), mib(res.VerifierRSS), mib(res.BareRSS))
	if res.Refused > 0 {
		fmt.Fprintf(&b, "The verifier refused %d reports in this run (see its log).\n\n", res.Refused)
	}
	for _, p := range plots {
		if strings.Contains(p, "throughput") {
			fmt.Fprintf(&b, "![reports processed per second over time](%s/%s)\n\n", o.plotRef, p)
		}
	}

	if l := res.Latency; l != nil {
		fmt.Fprintf(&b, "#### SIM swap → block → alert under background load\n\n")
		fmt.Fprintf(&b, "%d swaps: a gateway reports a card bound to another gateway (signed, QoS 1), then the card "+
			"returns to its own gateway and is resumed. Background: %s heartbeats/s asked from the %d load gateways, "+
			"%s reports/s processed during the %.0f s of swaps.",
			len(l.Swaps), thousands(l.TargetRate), o.devices, thousands(l.BackgroundRate), l.Duration.Seconds())
		if res.LatencyNote != "" {
			fmt.Fprintf(&b, " Note: %s.", res.LatencyNote)
		}
		if l.PoolExhausted {
			fmt.Fprintf(&b, " The pre-signed background reports (sized for 250 ms a swap) ran out before the last swap: swaps took longer under this load, and the bench stopped after the %d made under it.",
				len(underLoad(l)))
		}
		b.WriteString("\n\n| latency from the publish (ms) | p50 | p90 | p99 | max |\n| --- | ---: | ---: | ---: | ---: |\n")
		for _, r := range latencyRows(l) {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.name, ms(r.d.P50), ms(r.d.P90), ms(r.d.P99), ms(r.d.Max))
		}
		var alertP99, blockP99, eventP99 time.Duration
		for _, r := range latencyRows(l) {
			switch {
			case strings.Contains(r.name, "alert"):
				alertP99 = r.d.P99
			case strings.HasPrefix(r.name, "block"):
				blockP99 = r.d.P99
			case strings.Contains(r.name, "CloudEvent"):
				eventP99 = r.d.P99
			}
		}
		verdict := "met"
		if max(alertP99, blockP99, eventP99) > 100*time.Millisecond {
			verdict = "**missed**"
		}
		what := "block and alert"
		if l.Events {
			what = "block, alert and CloudEvent"
		}
		fmt.Fprintf(&b, "\nTarget p99 ≤ 100 ms for %s: %s.", what, verdict)
		b.WriteString("\n\n")
		for _, p := range plots {
			if strings.Contains(p, "latency") {
				fmt.Fprintf(&b, "![swap latency](%s/%s)\n", o.plotRef, p)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

func gib(b int64) string { return strconv.FormatFloat(float64(b)/(1<<30), 'f', 1, 64) + " GiB" }

func us(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e3, 'f', 1, 64) }
