package oauth

import (
	"crypto/sha256"
	"sync"
	"time"
)

// tokenCache remembers the claims of the server's own tokens whose
// signature verified, until they expire, so that a client calling many
// times with one token pays for the ECDSA verification once. Everything
// that can change while a token lives (the client's existence, tenant,
// scopes and limits) is still checked on every call. It is bounded; when
// full, an arbitrary entry makes room.
type tokenCache struct {
	mu      sync.Mutex
	max     int
	entries map[[sha256.Size]byte]Claims
}

func newTokenCache(max int) *tokenCache {
	return &tokenCache{max: max, entries: make(map[[sha256.Size]byte]Claims, max)}
}

// get returns the claims of token if they were verified before and the
// token has not expired at now (with leeway).
func (c *tokenCache) get(token string, now time.Time, leeway time.Duration) (Claims, bool) {
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	cl, ok := c.entries[key]
	if !ok {
		return Claims{}, false
	}
	if cl.ExpiresAt == nil || !now.Before(cl.ExpiresAt.Add(leeway)) {
		delete(c.entries, key)
		return Claims{}, false
	}
	return cl, true
}

// put remembers the verified claims of token.
func (c *tokenCache) put(token string, cl Claims) {
	key := sha256.Sum256([]byte(token))
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for k := range c.entries {
			delete(c.entries, k)
			break
		}
	}
	c.entries[key] = cl
}
