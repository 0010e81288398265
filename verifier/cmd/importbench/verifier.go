package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// verifierProc is a running `cardbind-verifier serve`.
type verifierProc struct {
	bin, dataDir, url, tokenFile, log string
	cmd                               *exec.Cmd
	done                              chan struct{}
}

// startVerifier writes a configuration (data in dir/data, HTTP and MQTT
// on free loopback ports) and starts the verifier, waiting until it is
// ready.
func startVerifier(ctx context.Context, bin, dir string) (*verifierProc, error) {
	httpAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	mqttAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	v := &verifierProc{bin: bin, dataDir: filepath.Join(dir, "data"), url: "http://" + httpAddr,
		log: filepath.Join(dir, "verifier.log"), done: make(chan struct{})}
	v.tokenFile = filepath.Join(v.dataDir, "operator-token")
	cfg := fmt.Sprintf("data_dir = %q\n\n[http]\nlisten = %q\n\n[mqtt]\nlisten = %q\n", v.dataDir, httpAddr, mqttAddr)
	cfgPath := filepath.Join(dir, "verifier.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	lf, err := os.Create(v.log)
	if err != nil {
		return nil, err
	}
	v.cmd = exec.Command(bin, "serve", "--config", cfgPath)
	v.cmd.Stdout, v.cmd.Stderr = lf, lf
	if err := v.cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start verifier: %w", err)
	}
	go func() {
		_ = v.cmd.Wait()
		lf.Close()
		close(v.done)
	}()
	if err := v.waitReady(ctx, 60*time.Second); err != nil {
		v.stop()
		return nil, err
	}
	return v, nil
}

func (v *verifierProc) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		select {
		case <-v.done:
			return fmt.Errorf("verifier exited:\n%s", v.tail())
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.url+"/readyz", nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("verifier not ready: %w\n%s", ctx.Err(), v.tail())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// stop ends the verifier with SIGTERM (SIGKILL after 30 s).
func (v *verifierProc) stop() {
	select {
	case <-v.done:
		return
	default:
	}
	_ = v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-v.done:
	case <-time.After(30 * time.Second):
		_ = v.cmd.Process.Kill()
		<-v.done
	}
}

func (v *verifierProc) tail() string {
	b, _ := os.ReadFile(v.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

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
	pid := v.cmd.Process.Pid
	cpu0, err := readCPU(pid)
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
			if rss, err := readRSS(pid); err == nil {
				peak = max(peak, rss)
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
	if cpu1, err := readCPU(pid); err == nil {
		run.CPU = cpu1 - cpu0
	}
	if err := json.Unmarshal(out, &run.Summary); err != nil {
		return run, fmt.Errorf("import summary %q: %w", out, err)
	}
	return run, nil
}

// readRSS returns a process's resident set in bytes.
func readRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// readCPU returns the user plus system CPU time of a process, from
// /proc/PID/stat (in USER_HZ = 100 ticks a second).
func readCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	return time.Duration(ut+st) * time.Second / 100, nil
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

// freeAddr returns a loopback address with a port nobody listens on now.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}
