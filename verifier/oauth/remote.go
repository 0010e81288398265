package oauth

import (
	"context"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// minRefetch bounds how often an unknown key id makes the key set be
// fetched again, so forged tokens cannot make the verifier hammer the
// provider.
const minRefetch = 30 * time.Second

// RemoteKeySet is an external provider's JWKS, fetched on first use,
// cached for the refresh interval, and fetched early when a token names a
// key id it does not know (at most every 30s). When a fetch fails, the
// keys fetched before keep being used.
type RemoteKeySet struct {
	url     string
	client  *http.Client
	refresh time.Duration
	now     func() time.Time
	log     *slog.Logger

	mu        sync.Mutex
	keys      map[string]remoteKey
	fetched   time.Time
	attempted time.Time
}

type remoteKey struct {
	pub  crypto.PublicKey
	algs []string
}

// NewRemoteKeySet returns a key set read from url.
func NewRemoteKeySet(url string, client *http.Client, refresh time.Duration, now func() time.Time, log *slog.Logger) *RemoteKeySet {
	return &RemoteKeySet{url: url, client: client, refresh: refresh, now: now, log: log}
}

// Key returns the key with this id that may verify alg. An empty kid
// matches the set's only key.
func (k *RemoteKeySet) Key(ctx context.Context, kid, alg string) (crypto.PublicKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	key, ok := k.lookup(kid)
	stale := now.Sub(k.fetched) >= k.refresh
	if (!ok || stale) && now.Sub(k.attempted) >= minRefetch || k.keys == nil && k.attempted.IsZero() {
		k.attempted = now
		if err := k.fetch(ctx); err != nil {
			k.log.Warn("fetch external jwks", "url", k.url, "err", err)
		} else {
			k.fetched = now
		}
		key, ok = k.lookup(kid)
	}
	if !ok {
		return nil, fmt.Errorf("no key %q in the provider's key set", kid)
	}
	if !containsString(key.algs, alg) {
		return nil, fmt.Errorf("key %q does not verify %s", kid, alg)
	}
	return key.pub, nil
}

func (k *RemoteKeySet) lookup(kid string) (remoteKey, bool) {
	if kid == "" && len(k.keys) == 1 {
		for _, v := range k.keys {
			return v, true
		}
	}
	v, ok := k.keys[kid]
	return v, ok && kid != ""
}

func (k *RemoteKeySet) fetch(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json, application/jwk-set+json")
	resp, err := k.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	var set JWKS
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	keys := map[string]remoteKey{}
	for i, j := range set.Keys {
		pub, algs, err := j.publicKey()
		if err != nil {
			k.log.Warn("external jwks: key skipped", "index", i, "err", err)
			continue
		}
		kid := j.Kid
		if kid == "" {
			kid = fmt.Sprintf("#%d", i) // only reachable through the single-key rule
		}
		keys[kid] = remoteKey{pub: pub, algs: algs}
	}
	if len(keys) == 0 {
		return fmt.Errorf("no usable keys")
	}
	k.keys = keys
	return nil
}
