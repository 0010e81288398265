package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Plot colours: one per series kind.
var (
	colVerifier = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colBare     = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colBlock    = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colAlert    = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	colDecision = color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}
	colEvent    = color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff}
)

// rateSeries turns cumulative samples into a rate (per second) over
// consecutive windows of width step, by linear interpolation of the
// count.
func rateSeries(samples []sample, step time.Duration) plotter.XYs {
	if len(samples) < 2 {
		return nil
	}
	countAt := func(t time.Duration) float64 {
		i, _ := slices.BinarySearchFunc(samples, t, func(s sample, t time.Duration) int {
			switch {
			case s.T < t:
				return -1
			case s.T > t:
				return 1
			}
			return 0
		})
		if i == 0 {
			return float64(samples[0].N)
		}
		if i >= len(samples) {
			return float64(samples[len(samples)-1].N)
		}
		a, b := samples[i-1], samples[i]
		if b.T == a.T {
			return float64(b.N)
		}
		f := float64(t-a.T) / float64(b.T-a.T)
		return float64(a.N) + f*float64(b.N-a.N)
	}
	end := samples[len(samples)-1].T
	var out plotter.XYs
	// A last window shorter than half a step is left out: its rate is
	// mostly noise.
	for t := step; t <= end+step/2; t += step {
		tt := min(t, end)
		prev := t - step
		if tt-prev < step/2 {
			break
		}
		rate := (countAt(tt) - countAt(prev)) / (tt - prev).Seconds()
		out = append(out, plotter.XY{X: (prev + (tt-prev)/2).Seconds(), Y: rate})
	}
	return out
}

// writePlots writes the PNG plots of res into dir and returns their file
// names.
func writePlots(dir string, res *results) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var names []string
	if len(res.Throughput) > 0 {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("Reports processed per second (%d-byte signed QoS 1 reports)", res.PayloadSize)
		p.X.Label.Text = "seconds since the first publish"
		p.Y.Label.Text = "reports/s (250 ms windows)"
		p.Add(plotter.NewGrid())
		top := 0.0
		for _, r := range res.Throughput {
			xys := rateSeries(r.Samples, 250*time.Millisecond)
			if len(xys) == 0 {
				continue
			}
			for _, xy := range xys {
				top = max(top, xy.Y)
			}
			l, err := plotter.NewLine(xys)
			if err != nil {
				return nil, err
			}
			l.Width = vg.Points(1.5)
			l.Color = colVerifier
			name := fmt.Sprintf("verifier, round %d", r.Round)
			if r.Target == "bare" {
				l.Color = colBare
				name = fmt.Sprintf("bare nats-server, round %d", r.Round)
			}
			if r.Round%2 == 0 {
				l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
			}
			p.Add(l)
			p.Legend.Add(name, l)
		}
		p.Legend.Top = true
		p.Y.Min, p.Y.Max = 0, top*1.4 // room for the legend
		name := "verifier-throughput.png"
		if err := p.Save(9*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, name)); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	if l := res.Latency; l != nil && len(l.Swaps) > 0 {
		series := []struct {
			name string
			col  color.Color
			get  func(swapSample) time.Duration
		}{
			{"decision (history entry)", colDecision, func(s swapSample) time.Duration { return s.Decision }},
			{"block at the network", colBlock, func(s swapSample) time.Duration { return s.Block }},
			{"alert at the MQTT subscriber", colAlert, func(s swapSample) time.Duration { return s.Alert }},
		}
		if l.Events {
			series = append(series, struct {
				name string
				col  color.Color
				get  func(swapSample) time.Duration
			}{"CloudEvent at the sink", colEvent, func(s swapSample) time.Duration { return s.Event }})
		}
		values := func(get func(swapSample) time.Duration) []float64 {
			var v []float64
			for _, s := range underLoad(l) {
				if d := get(s); d > 0 {
					v = append(v, float64(d)/1e6)
				}
			}
			slices.Sort(v)
			return v
		}

		// CDF.
		p := plot.New()
		p.Title.Text = fmt.Sprintf("SIM swap latency from the publish, %d swaps at %s reports/s background", len(underLoad(l)), thousands(l.BackgroundRate))
		p.X.Label.Text = "milliseconds"
		p.Y.Label.Text = "fraction of swaps"
		p.Add(plotter.NewGrid())
		for _, s := range series {
			v := values(s.get)
			xys := make(plotter.XYs, 0, 2*len(v))
			for i, x := range v {
				xys = append(xys, plotter.XY{X: x, Y: float64(i) / float64(len(v))}, plotter.XY{X: x, Y: float64(i+1) / float64(len(v))})
			}
			line, err := plotter.NewLine(xys)
			if err != nil {
				return nil, err
			}
			line.Color, line.Width = s.col, vg.Points(1.5)
			p.Add(line)
			p.Legend.Add(s.name, line)
		}
		p.Legend.Left, p.Legend.Top = false, false
		p.Legend.XOffs, p.Legend.YOffs = -vg.Points(10), vg.Points(10)
		p.Y.Min, p.Y.Max, p.X.Min = 0, 1, 0
		name := "swap-latency-cdf.png"
		if err := p.Save(9*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, name)); err != nil {
			return nil, err
		}
		names = append(names, name)

		// Histogram of block and alert, on shared bins.
		p = plot.New()
		p.Title.Text = "SIM swap latency histogram"
		p.X.Label.Text = "milliseconds from the publish"
		p.Y.Label.Text = "swaps per bin"
		p.Add(plotter.NewGrid())
		hi := 0.0
		for _, s := range series[1:3] {
			if v := values(s.get); len(v) > 0 {
				hi = max(hi, v[len(v)-1])
			}
		}
		width := niceWidth(hi / 50)
		for _, s := range series[1:3] {
			line, err := plotter.NewLine(histSteps(values(s.get), width, hi))
			if err != nil {
				return nil, err
			}
			line.Color, line.Width = s.col, vg.Points(1.5)
			p.Add(line)
			p.Legend.Add(s.name, line)
		}
		p.Legend.Top = true
		p.X.Min, p.Y.Min = 0, 0
		name = "swap-latency-hist.png"
		if err := p.Save(9*vg.Inch, 4.5*vg.Inch, filepath.Join(dir, name)); err != nil {
			return nil, err
		}
		names = append(names, name)
	}
	return names, nil
}

// niceWidth rounds w up to 1, 2 or 5 times a power of ten (at least
// 0.1).
func niceWidth(w float64) float64 {
	n := 0.1
	for {
		for _, m := range []float64{1, 2, 5} {
			if n*m >= w {
				return n * m
			}
		}
		n *= 10
	}
}

// histSteps counts values in bins [k·width, (k+1)·width) up to hi and
// returns the outline of the histogram as a step line.
func histSteps(v []float64, width, hi float64) plotter.XYs {
	n := int(hi/width) + 1
	counts := make([]int, n)
	for _, x := range v {
		counts[min(int(x/width), n-1)]++
	}
	xys := plotter.XYs{{X: 0, Y: 0}}
	for k, c := range counts {
		xys = append(xys, plotter.XY{X: float64(k) * width, Y: float64(c)}, plotter.XY{X: float64(k+1) * width, Y: float64(c)})
	}
	return append(xys, plotter.XY{X: float64(n) * width, Y: 0})
}
