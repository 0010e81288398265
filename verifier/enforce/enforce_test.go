package enforce

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/dispatch"
)

type call struct {
	method, path, key, body, auth string
}

// oss is a fake operator OSS on loopback that records calls and answers
// with the queued status codes (200 when the queue is empty).
type oss struct {
	mu     sync.Mutex
	calls  []call
	status []int
	delay  time.Duration
}

func (o *oss) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	o.mu.Lock()
	o.calls = append(o.calls, call{r.Method, r.URL.Path, r.Header.Get("Idempotency-Key"), string(body), r.Header.Get("Authorization")})
	code := 200
	if len(o.status) > 0 {
		code, o.status = o.status[0], o.status[1:]
	}
	delay := o.delay
	o.mu.Unlock()
	time.Sleep(delay)
	w.WriteHeader(code)
	_, _ = io.WriteString(w, `{"ok":true}`)
}

func (o *oss) got() []call {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]call(nil), o.calls...)
}

func start(t *testing.T, o *oss) string {
	srv := httptest.NewServer(o)
	t.Cleanup(srv.Close)
	return srv.URL
}

var task = verifier.EnforceTask{ICCID: "89860318640220133897", IMSI: "460031234567890", MSISDN: "+8613912345678",
	Tenant: "acme", Action: verifier.EnforceBlock, Reason: protocol.DecisionMismatch}

func TestHTTPSimNetworkPreset(t *testing.T) {
	o := &oss{}
	h, err := NewHTTP(SimNetwork(start(t, o)+"/"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := h.Enforce(ctx, task, "k-1"); err != nil {
		t.Fatal(err)
	}
	resume := task
	resume.Action = verifier.EnforceResume
	if err := h.Enforce(ctx, resume, "k-2"); err != nil {
		t.Fatal(err)
	}
	got := o.got()
	want := []call{
		{"POST", "/v1/cards/89860318640220133897/block", "k-1", `{"reason":"mismatch"}`, ""},
		{"POST", "/v1/cards/89860318640220133897/resume", "k-2", `{"reason":"mismatch"}`, ""},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("calls:\n%+v\nwant\n%+v", got, want)
	}
}

func TestHTTPTemplates(t *testing.T) {
	o := &oss{}
	base := start(t, o)
	h, err := NewHTTP(HTTPConfig{
		BlockURL: base + "/msisdn/{{.MSISDN}}/suspend", ResumeURL: base + "/msisdn/{{.MSISDN}}/restore",
		Method: "PUT", Headers: map[string]string{"Authorization": "Bearer s3cret"},
		Body: `<req imsi="{{.IMSI}}" tenant="{{.Tenant}}" key="{{.Key}}"/>`, ContentType: "application/xml",
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Enforce(context.Background(), task, "k-9"); err != nil {
		t.Fatal(err)
	}
	got := o.got()[0]
	if got.method != "PUT" || got.path != "/msisdn/+8613912345678/suspend" || got.auth != "Bearer s3cret" ||
		got.body != `<req imsi="460031234567890" tenant="acme" key="k-9"/>` {
		t.Errorf("call = %+v", got)
	}
	// With no body template, the task goes as JSON.
	h2, _ := NewHTTP(HTTPConfig{BlockURL: base + "/b", ResumeURL: base + "/r"}, nil)
	_ = h2.Enforce(context.Background(), task, "k")
	var sent verifier.EnforceTask
	if err := json.Unmarshal([]byte(o.got()[1].body), &sent); err != nil || sent != task {
		t.Errorf("default body %q: %v", o.got()[1].body, err)
	}
}

func TestHTTPStatusHandling(t *testing.T) {
	tests := []struct {
		name      string
		status    []int
		wantErr   bool
		permanent bool
		calls     int
	}{
		{"ok", nil, false, false, 1},
		{"created", []int{201}, false, false, 1},
		{"503 then ok", []int{503, 200}, false, false, 2},
		{"429 twice then ok", []int{429, 429, 200}, false, false, 3},
		{"always 500", []int{500, 500, 500, 500}, true, false, 3},
		{"404 not retried quickly but not permanent", []int{404}, true, false, 1},
		{"400 permanent", []int{400}, true, true, 1},
		{"401 permanent", []int{401}, true, true, 1},
		{"422 permanent", []int{422}, true, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &oss{status: tt.status}
			h, err := NewHTTP(SimNetwork(start(t, o)), nil)
			if err != nil {
				t.Fatal(err)
			}
			err = h.Enforce(context.Background(), task, "k")
			if (err != nil) != tt.wantErr || errors.Is(err, dispatch.ErrPermanent) != tt.permanent {
				t.Errorf("err = %v; want error %v permanent %v", err, tt.wantErr, tt.permanent)
			}
			if n := len(o.got()); n != tt.calls {
				t.Errorf("%d calls, want %d", n, tt.calls)
			}
		})
	}
}

func TestHTTPTimeoutAndDown(t *testing.T) {
	o := &oss{delay: 200 * time.Millisecond}
	cfg := SimNetwork(start(t, o))
	cfg.Timeout = 20 * time.Millisecond
	cfg.Retries = 1
	h, _ := NewHTTP(cfg, nil)
	if err := h.Enforce(context.Background(), task, "k"); err == nil || errors.Is(err, dispatch.ErrPermanent) {
		t.Errorf("slow OSS: %v", err)
	}
	down, _ := NewHTTP(SimNetwork("http://127.0.0.1:1"), nil)
	if err := down.Enforce(context.Background(), task, "k"); err == nil || errors.Is(err, dispatch.ErrPermanent) {
		t.Errorf("unreachable OSS: %v", err)
	}
}

func TestNewHTTPConfigErrors(t *testing.T) {
	tests := []struct {
		cfg  HTTPConfig
		want string
	}{
		{HTTPConfig{ResumeURL: "http://x/r"}, "block_url: required"},
		{HTTPConfig{BlockURL: "http://x/b"}, "resume_url: required"},
		{HTTPConfig{BlockURL: "ftp://x/b", ResumeURL: "http://x/r"}, "not an http(s) URL"},
		{HTTPConfig{BlockURL: "http://x/{{.Nope}}", ResumeURL: "http://x/r"}, "block_url"},
		{HTTPConfig{BlockURL: "http://x/b", ResumeURL: "http://x/r", Body: "{{"}, "body"},
		{HTTPConfig{BlockURL: "http://x/b", ResumeURL: "http://x/r", Headers: map[string]string{"X": "{{.Bad"}}, "headers.X"},
		{HTTPConfig{BlockURL: "http://x/b", ResumeURL: "http://x/r", Retries: -1}, "retries"},
	}
	for _, tt := range tests {
		if _, err := NewHTTP(tt.cfg, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewHTTP(%+v) = %v, want error containing %q", tt.cfg, err, tt.want)
		}
	}
}

type cards map[protocol.ICCID]*verifier.Card

func (c cards) Card(_ context.Context, iccid protocol.ICCID) (*verifier.Card, error) {
	if card, ok := c[iccid]; ok {
		return card, nil
	}
	return nil, verifier.ErrNotFound
}

type recorder struct{ tasks []verifier.EnforceTask }

func (r *recorder) Enforce(_ context.Context, t verifier.EnforceTask, _ string) error {
	r.tasks = append(r.tasks, t)
	return nil
}

func TestHandlerSkipsSupersededTasks(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	entryFor := func(action verifier.Enforcement) verifier.OutboxEntry {
		tk := task
		tk.Action = action
		b, _ := json.Marshal(tk)
		return verifier.OutboxEntry{ID: "e-" + string(action), Kind: verifier.OutboxEnforce, Payload: b}
	}
	tests := []struct {
		state    protocol.CardState
		action   verifier.Enforcement
		enforced bool
	}{
		{protocol.CardBlocked, verifier.EnforceBlock, true},
		{protocol.CardActive, verifier.EnforceBlock, false}, // resumed since: skip the stale block
		{protocol.CardActive, verifier.EnforceResume, true},
		{protocol.CardBlocked, verifier.EnforceResume, false}, // blocked again since
		{protocol.CardUnbound, verifier.EnforceResume, true},
	}
	for _, tt := range tests {
		rec := &recorder{}
		var observed int
		h := Handler(rec, cards{task.ICCID: {ICCID: task.ICCID, Status: verifier.CardStatus{State: tt.state}}}, quiet,
			func(verifier.EnforceTask, error, time.Duration) { observed++ })
		if err := h(context.Background(), entryFor(tt.action)); err != nil {
			t.Fatalf("%s/%s: %v", tt.state, tt.action, err)
		}
		if (len(rec.tasks) == 1) != tt.enforced || observed != len(rec.tasks) {
			t.Errorf("state %s action %s: enforced %d, observed %d; want enforced %v", tt.state, tt.action, len(rec.tasks), observed, tt.enforced)
		}
	}
	h := Handler(&recorder{}, cards{}, quiet, nil)
	if err := h(context.Background(), entryFor(verifier.EnforceBlock)); !errors.Is(err, dispatch.ErrPermanent) {
		t.Errorf("card gone: %v", err)
	}
	if err := h(context.Background(), verifier.OutboxEntry{ID: "x", Payload: []byte("{")}); !errors.Is(err, dispatch.ErrPermanent) {
		t.Errorf("bad payload: %v", err)
	}
}
