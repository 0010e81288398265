package enforce

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/template"
	"time"

	"github.com/cardbind/cardbind/verifier"
	"github.com/cardbind/cardbind/verifier/dispatch"
)

// HTTPConfig describes the call that blocks or resumes a card at an
// operator's OSS. URLs, header values and the body are Go templates over
// the task: {{.ICCID}}, {{.IMSI}}, {{.MSISDN}}, {{.Tenant}}, {{.Action}},
// {{.Reason}}, and {{.Key}} (the idempotency key). Path values are
// escaped.
type HTTPConfig struct {
	// BlockURL and ResumeURL are the endpoints, e.g.
	// "https://oss.example/cards/{{.ICCID}}/suspend".
	BlockURL  string `toml:"block_url" json:"block_url"`
	ResumeURL string `toml:"resume_url" json:"resume_url"`
	// Method defaults to POST.
	Method string `toml:"method" json:"method"`
	// Headers are added to every request (an API key, say).
	Headers map[string]string `toml:"headers" json:"headers"`
	// Body is the request body template; empty sends the task as JSON.
	Body string `toml:"body" json:"body"`
	// ContentType defaults to application/json.
	ContentType string `toml:"content_type" json:"content_type"`
	// IdempotencyHeader carries the idempotency key (default
	// "Idempotency-Key"; "-" sends none).
	IdempotencyHeader string `toml:"idempotency_header" json:"idempotency_header"`
	// Timeout bounds each attempt (default 5s).
	Timeout time.Duration `toml:"timeout" json:"timeout"`
	// Retries is how many quick extra attempts to make before giving the
	// task back to the outbox for a later retry (default 2).
	Retries int `toml:"retries" json:"retries"`
}

// SimNetwork returns the HTTP configuration for the firmware-sim operator
// network at base (e.g. "http://127.0.0.1:7000").
func SimNetwork(base string) HTTPConfig {
	base = strings.TrimRight(base, "/")
	return HTTPConfig{
		BlockURL:  base + "/v1/cards/{{.ICCID}}/block",
		ResumeURL: base + "/v1/cards/{{.ICCID}}/resume",
		Body:      `{"reason":"{{.Reason}}"}`,
	}
}

// HTTP is the generic HTTP enforcement adapter.
type HTTP struct {
	cfg     HTTPConfig
	client  *http.Client
	block   *template.Template
	resume  *template.Template
	body    *template.Template
	headers map[string]*template.Template
}

// NewHTTP checks the configuration and returns the adapter. client may be
// nil for http.DefaultClient's transport.
func NewHTTP(cfg HTTPConfig, client *http.Client) (*HTTP, error) {
	if cfg.Method == "" {
		cfg.Method = http.MethodPost
	}
	if cfg.ContentType == "" {
		cfg.ContentType = "application/json"
	}
	if cfg.IdempotencyHeader == "" {
		cfg.IdempotencyHeader = "Idempotency-Key"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Retries < 0 {
		return nil, errors.New("enforce: retries: must not be negative")
	}
	if cfg.Retries == 0 {
		cfg.Retries = 2
	}
	if client == nil {
		client = &http.Client{}
	}
	h := &HTTP{cfg: cfg, client: client, headers: map[string]*template.Template{}}
	var err error
	if h.block, err = parseURLTemplate("block_url", cfg.BlockURL); err != nil {
		return nil, err
	}
	if h.resume, err = parseURLTemplate("resume_url", cfg.ResumeURL); err != nil {
		return nil, err
	}
	if cfg.Body != "" {
		if h.body, err = template.New("body").Option("missingkey=error").Parse(cfg.Body); err != nil {
			return nil, fmt.Errorf("enforce: body: %w", err)
		}
	}
	for k, v := range cfg.Headers {
		if h.headers[k], err = template.New(k).Option("missingkey=error").Parse(v); err != nil {
			return nil, fmt.Errorf("enforce: headers.%s: %w", k, err)
		}
	}
	return h, nil
}

func parseURLTemplate(key, s string) (*template.Template, error) {
	if s == "" {
		return nil, fmt.Errorf("enforce: %s: required", key)
	}
	t, err := template.New(key).Option("missingkey=error").Parse(s)
	if err != nil {
		return nil, fmt.Errorf("enforce: %s: %w", key, err)
	}
	probe, err := render(t, templateData{ICCID: "89000000000000000000"}, true)
	if err != nil {
		return nil, fmt.Errorf("enforce: %s: %w", key, err)
	}
	if u, err := url.Parse(probe); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("enforce: %s: %q is not an http(s) URL", key, s)
	}
	return t, nil
}

// templateData is what templates see: the task's fields as strings, and
// the idempotency key.
type templateData struct {
	ICCID, IMSI, MSISDN, Tenant, Action, Reason, Key string
}

func dataOf(task verifier.EnforceTask, key string) templateData {
	return templateData{ICCID: string(task.ICCID), IMSI: string(task.IMSI), MSISDN: string(task.MSISDN),
		Tenant: task.Tenant, Action: string(task.Action), Reason: string(task.Reason), Key: key}
}

// render executes t; with escape set, every value is path-escaped (for
// URLs).
func render(t *template.Template, d templateData, escape bool) (string, error) {
	if escape {
		for _, f := range []*string{&d.ICCID, &d.IMSI, &d.MSISDN, &d.Tenant, &d.Action, &d.Reason, &d.Key} {
			*f = url.PathEscape(*f)
		}
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", err
	}
	return b.String(), nil
}

// Enforce makes the call, retrying quickly on transport errors and on
// 408, 425, 429 and 5xx answers. 400, 401, 403, 405 and 422 are permanent.
func (h *HTTP) Enforce(ctx context.Context, task verifier.EnforceTask, key string) error {
	req, err := h.request(task, key)
	if err != nil {
		return fmt.Errorf("%w: %w", err, dispatch.ErrPermanent)
	}
	var last error
	for attempt := 0; attempt <= h.cfg.Retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(dispatch.Backoff(attempt, 50*time.Millisecond, time.Second)):
			}
		}
		var retry bool
		retry, last = h.once(ctx, req)
		if last == nil || !retry {
			return last
		}
	}
	return last
}

type preparedRequest struct {
	url     string
	body    []byte
	headers http.Header
}

func (h *HTTP) request(task verifier.EnforceTask, key string) (*preparedRequest, error) {
	d := dataOf(task, key)
	t := h.block
	if task.Action == verifier.EnforceResume {
		t = h.resume
	} else if task.Action != verifier.EnforceBlock {
		return nil, fmt.Errorf("enforce: unknown action %q", task.Action)
	}
	u, err := render(t, d, true)
	if err != nil {
		return nil, fmt.Errorf("enforce: url: %w", err)
	}
	p := &preparedRequest{url: u, headers: http.Header{}}
	if h.body != nil {
		s, err := render(h.body, d, false)
		if err != nil {
			return nil, fmt.Errorf("enforce: body: %w", err)
		}
		p.body = []byte(s)
	} else if p.body, err = json.Marshal(task); err != nil {
		return nil, fmt.Errorf("enforce: body: %w", err)
	}
	for k, t := range h.headers {
		v, err := render(t, d, false)
		if err != nil {
			return nil, fmt.Errorf("enforce: header %s: %w", k, err)
		}
		p.headers.Set(k, v)
	}
	p.headers.Set("Content-Type", h.cfg.ContentType)
	if h.cfg.IdempotencyHeader != "-" {
		p.headers.Set(h.cfg.IdempotencyHeader, key)
	}
	return p, nil
}

func (h *HTTP) once(ctx context.Context, p *preparedRequest) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, h.cfg.Method, p.url, bytes.NewReader(p.body))
	if err != nil {
		return false, fmt.Errorf("enforce: %w: %w", err, dispatch.ErrPermanent)
	}
	req.Header = p.headers.Clone()
	resp, err := h.client.Do(req)
	if err != nil {
		return true, fmt.Errorf("enforce: %s %s: %w", h.cfg.Method, redact(p.url), err)
	}
	defer resp.Body.Close()
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	switch c := resp.StatusCode; {
	case c >= 200 && c < 300:
		return false, nil
	case c == 400 || c == 401 || c == 403 || c == 405 || c == 422:
		return false, fmt.Errorf("enforce: %s %s: %s: %s: %w", h.cfg.Method, redact(p.url), resp.Status, bytes.TrimSpace(snippet), dispatch.ErrPermanent)
	default:
		// 404 is retried too: the network may not know a card that has
		// not attached yet.
		return c == 408 || c == 425 || c == 429 || c >= 500, fmt.Errorf("enforce: %s %s: %s: %s", h.cfg.Method, redact(p.url), resp.Status, bytes.TrimSpace(snippet))
	}
}

// redact drops the query string, which may hold credentials, from a URL
// for logs.
func redact(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i] + "?..."
	}
	return u
}
