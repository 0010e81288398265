package network

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// APIError is an error answer of the HTTP API that maps to no sentinel.
type APIError struct {
	Status int
	Body   ErrorBody
}

// Error describes the answer.
func (e *APIError) Error() string {
	return fmt.Sprintf("network: HTTP %d %s: %s", e.Status, e.Body.Code, e.Body.Message)
}

// Client calls the HTTP API of a simulated network. It has the same methods
// as Network. The zero HTTP client means a client without timeout (watch
// calls are long polls bounded by their context and WatchWait).
type Client struct {
	base string
	hc   *http.Client
	// WatchWait is how long one watch call may wait on the server; 0 means
	// 25 s.
	WatchWait time.Duration
}

// NewClient returns a client for the API at baseURL (e.g.
// "http://127.0.0.1:7000"). A nil hc means http.DefaultClient.
func NewClient(baseURL string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(baseURL, "/"), hc: hc}
}

// do sends a request, decodes a JSON answer into out and returns the status.
func (c *Client) do(ctx context.Context, method, path string, hdr http.Header, in, out any) (int, error) {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return 0, fmt.Errorf("network: encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return 0, fmt.Errorf("network: %s %s: %w", method, path, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("network: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<22))
	if err != nil {
		return 0, fmt.Errorf("network: %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var eb ErrorBody
		_ = json.Unmarshal(raw, &eb)
		switch resp.StatusCode {
		case http.StatusNotFound:
			return resp.StatusCode, fmt.Errorf("%w: %s", ErrNotFound, eb.Message)
		case http.StatusConflict:
			if eb.Code == "NOT_ATTACHED" {
				return resp.StatusCode, fmt.Errorf("%w: %s", ErrNotAttached, eb.Message)
			}
			return resp.StatusCode, fmt.Errorf("%w: %s", ErrConflict, eb.Message)
		case http.StatusBadRequest:
			return resp.StatusCode, fmt.Errorf("%w: %s", ErrInvalid, eb.Message)
		}
		return resp.StatusCode, &APIError{Status: resp.StatusCode, Body: eb}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, fmt.Errorf("network: %s %s: decode answer: %w", method, path, err)
		}
	}
	return resp.StatusCode, nil
}

func keyHeader(key string) http.Header {
	if key == "" {
		return nil
	}
	return http.Header{"Idempotency-Key": {key}}
}

// Register adds a card. created is false when the card was already there.
func (c *Client) Register(ctx context.Context, spec CardSpec) (card Card, created bool, err error) {
	status, err := c.do(ctx, http.MethodPost, "/v1/cards", nil, spec, &card)
	return card, status == http.StatusCreated, err
}

// Card reads one card.
func (c *Client) Card(ctx context.Context, iccid string) (Card, error) {
	var card Card
	_, err := c.do(ctx, http.MethodGet, "/v1/cards/"+url.PathEscape(iccid), nil, nil, &card)
	return card, err
}

// Cards lists the cards that match f.
func (c *Client) Cards(ctx context.Context, f Filter) ([]Card, error) {
	q := url.Values{}
	if f.IMSI != "" {
		q.Set("imsi", f.IMSI)
	}
	if f.MSISDN != "" {
		q.Set("msisdn", f.MSISDN)
	}
	if f.Blocked != nil {
		q.Set("blocked", strconv.FormatBool(*f.Blocked))
	}
	path := "/v1/cards"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out struct {
		Cards []Card `json:"cards"`
	}
	_, err := c.do(ctx, http.MethodGet, path, nil, nil, &out)
	return out.Cards, err
}

// Block blocks a card (idempotent).
func (c *Client) Block(ctx context.Context, iccid, reason string) (Card, error) {
	return c.BlockWithKey(ctx, iccid, reason, "")
}

// BlockWithKey blocks a card, sending key as the Idempotency-Key header so
// that a retried call is answered from the server's memory.
func (c *Client) BlockWithKey(ctx context.Context, iccid, reason, key string) (Card, error) {
	var card Card
	_, err := c.do(ctx, http.MethodPost, "/v1/cards/"+url.PathEscape(iccid)+"/block", keyHeader(key), BlockRequest{Reason: reason}, &card)
	return card, err
}

// Resume lifts a block (idempotent).
func (c *Client) Resume(ctx context.Context, iccid string) (Card, error) {
	return c.ResumeWithKey(ctx, iccid, "")
}

// ResumeWithKey resumes a card, sending key as the Idempotency-Key header.
func (c *Client) ResumeWithKey(ctx context.Context, iccid, key string) (Card, error) {
	var card Card
	_, err := c.do(ctx, http.MethodPost, "/v1/cards/"+url.PathEscape(iccid)+"/resume", keyHeader(key), nil, &card)
	return card, err
}

// Attach registers a card in a device.
func (c *Client) Attach(ctx context.Context, req AttachRequest) (AttachResult, error) {
	var res AttachResult
	_, err := c.do(ctx, http.MethodPost, "/v1/attach", nil, req, &res)
	return res, err
}

// AttachCard attaches a registered card in a device that runs no
// simulated modem.
func (c *Client) AttachCard(ctx context.Context, iccid string, d DeviceAttach) (AttachResult, error) {
	var res AttachResult
	_, err := c.do(ctx, http.MethodPost, "/v1/cards/"+url.PathEscape(iccid)+"/attach", nil, d, &res)
	return res, err
}

// UpdateLocation tells the network the card's device moved to another
// cell.
func (c *Client) UpdateLocation(ctx context.Context, u LocationUpdate) (Card, error) {
	var card Card
	_, err := c.do(ctx, http.MethodPost, "/v1/location", nil, u, &card)
	return card, err
}

// Detach ends a card's registration (only in imei, when not empty).
func (c *Client) Detach(ctx context.Context, iccid, imei string) (Card, error) {
	var card Card
	_, err := c.do(ctx, http.MethodPost, "/v1/detach", nil, DetachRequest{ICCID: iccid, IMEI: imei}, &card)
	return card, err
}

// Watch long-polls until the card's Version is greater than after and
// returns the card. When the server's wait ends first it returns the card
// unchanged (same Version) and a nil error; callers loop.
func (c *Client) Watch(ctx context.Context, iccid string, after uint64) (Card, error) {
	wait := c.WatchWait
	if wait <= 0 {
		wait = defaultWatchWait
	}
	q := url.Values{"after": {strconv.FormatUint(after, 10)}, "wait": {wait.String()}}
	var card Card
	_, err := c.do(ctx, http.MethodGet, "/v1/cards/"+url.PathEscape(iccid)+"/watch?"+q.Encode(), nil, nil, &card)
	if err != nil && ctx.Err() != nil {
		return card, errors.Join(ctx.Err(), err)
	}
	return card, err
}
