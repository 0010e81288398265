package camara

import (
	"math"
	"sync"
	"time"
)

// limiter enforces each client's request rate (a token bucket holding one
// second's worth of requests, at least one) and request quota (a count per
// quota window, windows aligned as time.Truncate aligns them, so 24h windows start at
// midnight UTC). Counts are kept in memory: they restart with the process
// and each replica counts its own requests.
type limiter struct {
	window time.Duration

	mu      sync.Mutex
	clients map[string]*usage
}

type usage struct {
	tokens      float64
	last        time.Time
	windowStart time.Time
	used        int64
}

func newLimiter(window time.Duration) *limiter {
	return &limiter{window: window, clients: map[string]*usage{}}
}

// allow charges one request to client. rate is requests per second and
// quota requests per window; 0 means unlimited. A request refused for its
// rate does not count against the quota.
func (l *limiter) allow(client string, rate float64, quota int64, now time.Time) *apiError {
	if rate <= 0 && quota <= 0 {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	u, ok := l.clients[client]
	burst := math.Max(1, rate)
	if !ok {
		u = &usage{tokens: burst, last: now}
		l.clients[client] = u
	}
	if rate > 0 {
		if el := now.Sub(u.last).Seconds(); el > 0 {
			u.tokens = math.Min(burst, u.tokens+el*rate)
		}
		u.last = now
		if u.tokens < 1 {
			return errTooManyRequests
		}
	}
	if quota > 0 {
		if ws := now.Truncate(l.window); !ws.Equal(u.windowStart) {
			u.windowStart, u.used = ws, 0
		}
		if u.used >= quota {
			return errQuotaExceeded
		}
		u.used++
	}
	if rate > 0 {
		u.tokens--
	}
	return nil
}
