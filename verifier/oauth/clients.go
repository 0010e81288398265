package oauth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cardbind/cardbind/protocol"
	"github.com/cardbind/cardbind/verifier"
)

// Records is the part of the store's record space the client registry
// uses; verifier.Store implements it. GetRecord returns an error wrapping
// verifier.ErrNotFound for a missing key.
type Records interface {
	PutRecord(ctx context.Context, ns, key string, value []byte) error
	GetRecord(ctx context.Context, ns, key string) ([]byte, error)
	DeleteRecord(ctx context.Context, ns, key string) error
	ListRecords(ctx context.Context, ns, after string, limit int) ([]verifier.Record, error)
}

// nsClient is the record namespace of OAuth clients.
const nsClient = "oauth-client"

// Client is a registered API client. Its secret is kept only as a hash.
type Client struct {
	ID     string   `json:"client_id"`
	Name   string   `json:"name,omitempty"`
	Tenant string   `json:"tenant"`
	Scopes []string `json:"scopes"`
	// Rate is the request rate limit in requests per second; 0: the API's
	// default.
	Rate float64 `json:"rate,omitempty"`
	// Quota is the number of requests allowed per quota window; 0: the
	// API's default.
	Quota   int64     `json:"quota,omitempty"`
	Created time.Time `json:"created"`
	// SecretHash is the SHA-256 of the secret. The secret is 256 random
	// bits, so a fast hash is as strong as a slow one here.
	SecretHash []byte `json:"secret_hash,omitempty"`
}

// ClientSpec is what an operator asks for when creating a client.
type ClientSpec struct {
	Name   string   `json:"name,omitempty"`
	Tenant string   `json:"tenant"`
	Scopes []string `json:"scopes"`
	Rate   float64  `json:"rate,omitempty"`
	Quota  int64    `json:"quota,omitempty"`
}

// ParseRate parses a rate limit as the CLI writes it: "100/s", "6000/m",
// "100" (per second). It returns requests per second.
func ParseRate(s string) (float64, error) {
	num, unit, _ := strings.Cut(strings.TrimSpace(s), "/")
	per := 1.0
	switch unit {
	case "", "s":
	case "m", "min":
		per = 60
	case "h":
		per = 3600
	default:
		return 0, fmt.Errorf("%w: rate %q: want N/s, N/m or N/h", ErrInvalid, s)
	}
	n, err := strconv.ParseFloat(num, 64)
	if err != nil || n < 0 || math.IsInf(n, 0) || math.IsNaN(n) {
		return 0, fmt.Errorf("%w: rate %q: want a non-negative number", ErrInvalid, s)
	}
	return n / per, nil
}

// registry stores clients and caches them for token validation, which
// looks a client up on every API request.
type registry struct {
	rec     Records
	allowed []string
	now     func() time.Time
	ttl     time.Duration

	mu    sync.Mutex
	cache map[string]cachedClient
}

type cachedClient struct {
	c       *Client
	err     error
	expires time.Time
}

// create stores a new client and returns it with its secret.
func (r *registry) create(ctx context.Context, spec ClientSpec) (*Client, string, error) {
	if err := protocol.ValidateID("tenant id", spec.Tenant); err != nil {
		return nil, "", fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(spec.Name) > 200 {
		return nil, "", fmt.Errorf("%w: name longer than 200 characters", ErrInvalid)
	}
	if len(spec.Scopes) == 0 {
		return nil, "", fmt.Errorf("%w: at least one scope is needed", ErrInvalid)
	}
	var scopes []string
	for _, s := range spec.Scopes {
		for _, f := range splitScopes(s) {
			if !slices.Contains(r.allowed, f) {
				return nil, "", fmt.Errorf("%w: unknown scope %q (known: %s)", ErrInvalid, f, strings.Join(r.allowed, " "))
			}
			if !slices.Contains(scopes, f) {
				scopes = append(scopes, f)
			}
		}
	}
	if spec.Rate < 0 || math.IsNaN(spec.Rate) || math.IsInf(spec.Rate, 0) || spec.Quota < 0 {
		return nil, "", fmt.Errorf("%w: rate and quota must not be negative", ErrInvalid)
	}
	idb, secret := make([]byte, 10), make([]byte, 32)
	_, _ = rand.Read(idb) // crypto/rand.Read never fails
	_, _ = rand.Read(secret)
	sec := b64(secret)
	h := sha256.Sum256([]byte(sec))
	c := &Client{ID: "cb-" + hex.EncodeToString(idb), Name: spec.Name, Tenant: spec.Tenant, Scopes: scopes,
		Rate: spec.Rate, Quota: spec.Quota, Created: r.now().UTC(), SecretHash: h[:]}
	data, err := json.Marshal(c)
	if err != nil {
		return nil, "", err
	}
	if err := r.rec.PutRecord(ctx, nsClient, c.ID, data); err != nil {
		return nil, "", fmt.Errorf("oauth: store client: %w", err)
	}
	return c, sec, nil
}

// get returns a client from the store (ErrNotFound when absent).
func (r *registry) get(ctx context.Context, id string) (*Client, error) {
	data, err := r.rec.GetRecord(ctx, nsClient, id)
	if err != nil {
		return nil, fmt.Errorf("oauth: client %s: %w", id, err)
	}
	var c Client
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("oauth: client %s: %w", id, err)
	}
	return &c, nil
}

// cached returns a client through the cache; a deleted client is seen as
// deleted after at most the cache TTL.
func (r *registry) cached(ctx context.Context, id string) (*Client, error) {
	now := r.now()
	r.mu.Lock()
	e, ok := r.cache[id]
	r.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.c, e.err
	}
	c, err := r.get(ctx, id)
	if err != nil && !errors.Is(err, verifier.ErrNotFound) {
		return nil, err // store trouble is not cached
	}
	r.mu.Lock()
	if len(r.cache) > 100_000 {
		clear(r.cache)
	}
	r.cache[id] = cachedClient{c: c, err: err, expires: now.Add(r.ttl)}
	r.mu.Unlock()
	return c, err
}

// forget drops a client from the cache.
func (r *registry) forget(id string) {
	r.mu.Lock()
	delete(r.cache, id)
	r.mu.Unlock()
}

// authenticate checks a client's secret in constant time; an unknown
// client costs the same hash and compare as a wrong secret.
func (r *registry) authenticate(ctx context.Context, id, secret string) (*Client, error) {
	h := sha256.Sum256([]byte(secret))
	c, err := r.get(ctx, id)
	want := make([]byte, sha256.Size)
	if err == nil {
		want = c.SecretHash
	}
	if subtle.ConstantTimeCompare(h[:], want) != 1 || err != nil {
		if err != nil && !errors.Is(err, verifier.ErrNotFound) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: client %q: unknown client or wrong secret", ErrUnauthenticated, id)
	}
	return c, nil
}

// list returns all clients in id order.
func (r *registry) list(ctx context.Context) ([]*Client, error) {
	var out []*Client
	after := ""
	for {
		recs, err := r.rec.ListRecords(ctx, nsClient, after, 500)
		if err != nil {
			return nil, fmt.Errorf("oauth: list clients: %w", err)
		}
		for _, rec := range recs {
			var c Client
			if err := json.Unmarshal(rec.Value, &c); err != nil {
				return nil, fmt.Errorf("oauth: client %s: %w", rec.Key, err)
			}
			out = append(out, &c)
		}
		if len(recs) < 500 {
			return out, nil
		}
		after = recs[len(recs)-1].Key
	}
}

// delete removes a client; its tokens stop working within the cache TTL.
func (r *registry) delete(ctx context.Context, id string) error {
	if _, err := r.get(ctx, id); err != nil {
		return err
	}
	if err := r.rec.DeleteRecord(ctx, nsClient, id); err != nil {
		return fmt.Errorf("oauth: delete client %s: %w", id, err)
	}
	r.forget(id)
	return nil
}
