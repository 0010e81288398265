package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cardbind/cardbind/verifier/cmd/internal/benchproc"
)

// verifierProc is a running `cardbind-verifier serve`.
type verifierProc struct {
	*benchproc.Child
	bin, dataDir, url, tokenFile string
}

// startVerifier writes a configuration (data in dir/data, HTTP and MQTT
// on free loopback ports) and starts the verifier, waiting until it is
// ready.
func startVerifier(ctx context.Context, bin, dir string) (*verifierProc, error) {
	httpAddr, err := benchproc.FreeAddr()
	if err != nil {
		return nil, err
	}
	mqttAddr, err := benchproc.FreeAddr()
	if err != nil {
		return nil, err
	}
	v := &verifierProc{bin: bin, dataDir: filepath.Join(dir, "data"), url: "http://" + httpAddr}
	v.tokenFile = filepath.Join(v.dataDir, "operator-token")
	cfg := fmt.Sprintf("data_dir = %q\n\n[http]\nlisten = %q\n\n[mqtt]\nlisten = %q\n", v.dataDir, httpAddr, mqttAddr)
	cfgPath := filepath.Join(dir, "verifier.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if v.Child, err = benchproc.Start("verifier", filepath.Join(dir, "verifier.log"), bin, "serve", "--config", cfgPath); err != nil {
		return nil, err
	}
	if err := v.WaitHTTP(ctx, v.url+"/readyz", 60*time.Second); err != nil {
		v.stop()
		return nil, err
	}
	return v, nil
}

// stop ends the verifier with SIGTERM (SIGKILL after 30 s).
func (v *verifierProc) stop() { v.Stop(30 * time.Second) }

// admin runs `cardbind-verifier admin ARGS...` against the verifier and
// returns its stdout.
func (v *verifierProc) admin(ctx context.Context, args ...string) ([]byte, error) {
	out, _, err := v.adminErr(ctx, args...)
	return out, err
}

// adminErr is admin that also returns the end of stderr.
func (v *verifierProc) adminErr(ctx context.Context, args ...string) ([]byte, string, error) {
	full := append([]string{"admin", "--url", v.url, "--token-file", v.tokenFile}, args...)
	cmd := exec.CommandContext(ctx, v.bin, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		e := errb.String()
		if len(e) > 2000 {
			e = e[len(e)-2000:]
		}
		return nil, e, fmt.Errorf("admin %s: %w: %s", strings.Join(args, " "), err, e)
	}
	e := errb.String()
	if len(e) > 2000 {
		e = e[len(e)-2000:]
	}
	return out.Bytes(), e, nil
}

// importSummary is the summary `admin import` prints.
type importSummary struct {
	Lines     int `json:"lines"`
	Created   int `json:"created"`
	Changed   int `json:"changed"`
	Unchanged int `json:"unchanged"`
	Bound     int `json:"bound"`
	Errors    int `json:"errors"`
}

// importRun is one timed import.
type importRun struct {
	Elapsed time.Duration
	Summary importSummary
	PeakRSS int64         // the verifier's highest RSS sampled during the import
	CPU     time.Duration // the verifier's CPU time during the import
	Stderr  string        // the end of the CLI's stderr
}

// timedImport runs `admin import --file path`, sampling the verifier's
// RSS every 100 ms.
func (v *verifierProc) timedImport(ctx context.Context, path string) (importRun, error) {
	pid := v.PID()
	cpu0, err := benchproc.ReadCPU(pid)
	if err != nil {
		return importRun{}, err
	}
	var run importRun
	stopSampling := make(chan struct{})
	sampled := make(chan int64)
	go func() {
		var peak int64
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			if m, err := benchproc.ReadMem(pid); err == nil {
				peak = max(peak, m.RSS)
			}
			select {
			case <-stopSampling:
				sampled <- peak
				return
			case <-t.C:
			}
		}
	}()
	start := time.Now()
	out, stderr, err := v.adminErr(ctx, "import", "--file", path)
	run.Stderr = stderr
	run.Elapsed = time.Since(start)
	close(stopSampling)
	run.PeakRSS = <-sampled
	if err != nil {
		return run, err
	}
	if cpu1, err := benchproc.ReadCPU(pid); err == nil {
		run.CPU = cpu1 - cpu0
	}
	if err := json.Unmarshal(out, &run.Summary); err != nil {
		return run, fmt.Errorf("import summary %q: %w", out, err)
	}
	return run, nil
}

// dirSize returns the bytes the files under dir hold.
func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n += info.Size()
		return nil
	})
	return n, err
}
