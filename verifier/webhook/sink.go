package webhook

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"syscall"
	"time"
)

// ErrSink marks a sink address the notifier refuses: not https, not a
// valid URL, a host that does not resolve, or one that resolves to an
// address sinks may not have.
var ErrSink = errors.New("sink refused")

// guard keeps sinks off the verifier's own networks: unless private sinks
// are allowed, a sink may only be a public unicast address.
type guard struct {
	allowPrivate bool
}

// allowed reports whether a sink may have address a.
func (g *guard) allowed(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a.IsInterfaceLocalMulticast() {
		return false
	}
	if g.allowPrivate {
		return true
	}
	return !a.IsLoopback() && !a.IsPrivate() && !a.IsLinkLocalUnicast() && !a.IsLinkLocalMulticast() &&
		!nonPublic(a)
}

// nonPublic covers the special-purpose ranges netip has no predicate for
// (RFC 6890): this network, shared address space (CGNAT), IETF protocol
// assignments, documentation, benchmarking, reserved, and IPv4-translated
// or discard-only IPv6.
func nonPublic(a netip.Addr) bool {
	for _, p := range nonPublicPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

var nonPublicPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001:db8::/32"),
}

// control refuses, at connect time, an address the guard does not allow:
// the check that counts, since DNS may answer differently than when the
// sink was accepted.
func (g *guard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("webhook: dial %s: %w", address, err)
	}
	if !g.allowed(ap.Addr()) {
		return fmt.Errorf("webhook: dial %s: address not allowed for sinks: %w", address, ErrSink)
	}
	return nil
}

// CheckSink validates a sink URL: https, a host, no user info, and every
// address the host resolves to allowed. Errors wrap ErrSink.
func (n *Notifier) CheckSink(ctx context.Context, sink string) error {
	u, err := url.Parse(sink)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.Opaque != "" {
		return fmt.Errorf("webhook: sink %q: not an https URL: %w", sink, ErrSink)
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		if !n.guard.allowed(a) {
			return fmt.Errorf("webhook: sink %q: address not allowed: %w", sink, ErrSink)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("webhook: sink %q: host does not resolve: %v: %w", sink, err, ErrSink)
	}
	for _, a := range addrs {
		if !n.guard.allowed(a) {
			return fmt.Errorf("webhook: sink %q: resolves to %s, not allowed: %w", sink, a, ErrSink)
		}
	}
	return nil
}

// newClient returns the HTTP client that delivers events: no proxy (it
// would hide the address from the guard), no redirects, the guard at
// connect time, and the system's CAs plus cfg.CAFile.
func newClient(cfg Config, g *guard) (*http.Client, error) {
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("webhook: CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("webhook: CA file %s: no PEM certificates", cfg.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	dialer := &net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second, Control: g.control}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: cfg.Timeout,
		MaxIdleConnsPerHost: cfg.Workers,
		IdleConnTimeout:     90 * time.Second,
		ForceAttemptHTTP2:   true,
	}
	return &http.Client{Transport: tr, Timeout: cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}, nil
}
