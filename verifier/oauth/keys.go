package oauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
)

// KeyFile is the name of the signing key file in the data directory.
const KeyFile = "oauth-signing-key.pem"

// signingKey is the server's ES256 token signing key.
type signingKey struct {
	priv *ecdsa.PrivateKey
	kid  string
	jwk  JWK
}

// loadOrCreateKey reads the signing key from dir/KeyFile, or generates a
// P-256 key and writes it there (mode 0600) on first start.
func loadOrCreateKey(dir string) (*signingKey, error) {
	if dir == "" {
		return nil, fmt.Errorf("oauth: data directory not set")
	}
	path := filepath.Join(dir, KeyFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("oauth: generate signing key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(priv)
		if err != nil {
			return nil, fmt.Errorf("oauth: encode signing key: %w", err)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("oauth: %w", err)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			if errors.Is(err, fs.ErrExist) { // another process won the race
				return loadOrCreateKey(dir)
			}
			return nil, fmt.Errorf("oauth: write signing key: %w", err)
		}
		werr := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
		if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
			_ = os.Remove(path)
			return nil, fmt.Errorf("oauth: write signing key: %w", err)
		}
		return newSigningKey(priv)
	case err != nil:
		return nil, fmt.Errorf("oauth: read signing key: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("oauth: signing key %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("oauth: signing key %s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("oauth: signing key %s: %w", path, err)
	}
	priv, ok := k.(*ecdsa.PrivateKey)
	if !ok || priv.Curve != elliptic.P256() {
		return nil, fmt.Errorf("oauth: signing key %s is not a P-256 ECDSA key", path)
	}
	return newSigningKey(priv)
}

func newSigningKey(priv *ecdsa.PrivateKey) (*signingKey, error) {
	pub, err := priv.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("oauth: %w", err)
	}
	x, y := b64(pub[1:33]), b64(pub[33:65])
	// RFC 7638 thumbprint: the required members in lexicographic order.
	sum := sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`))
	kid := b64(sum[:])
	return &signingKey{priv: priv, kid: kid,
		jwk: JWK{Kty: "EC", Crv: "P-256", X: x, Y: y, Kid: kid, Use: "sig", Alg: "ES256"}}, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// JWK is one JSON Web Key (RFC 7517) of the kinds the package reads and
// writes: EC (P-256, P-384, P-521), RSA and OKP (Ed25519) public keys.
type JWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid,omitempty"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// JWKS is a JSON Web Key Set.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// publicKey returns the key and the JWS algorithms it may verify. A key
// whose "alg" is set verifies that algorithm only; otherwise the algorithm
// follows from the key type and curve (RSA keys: RS256, RS384, RS512).
func (k JWK) publicKey() (crypto.PublicKey, []string, error) {
	if k.Use != "" && k.Use != "sig" {
		return nil, nil, fmt.Errorf("key %q is for %q, not signatures", k.Kid, k.Use)
	}
	dec := base64.RawURLEncoding.DecodeString
	var pub crypto.PublicKey
	var algs []string
	switch k.Kty {
	case "EC":
		var curve elliptic.Curve
		var size int
		switch k.Crv {
		case "P-256":
			curve, size, algs = elliptic.P256(), 32, []string{"ES256"}
		case "P-384":
			curve, size, algs = elliptic.P384(), 48, []string{"ES384"}
		case "P-521":
			curve, size, algs = elliptic.P521(), 66, []string{"ES512"}
		default:
			return nil, nil, fmt.Errorf("key %q: unsupported curve %q", k.Kid, k.Crv)
		}
		x, errX := dec(k.X)
		y, errY := dec(k.Y)
		if errX != nil || errY != nil || len(x) != size || len(y) != size {
			return nil, nil, fmt.Errorf("key %q: bad EC coordinates", k.Kid)
		}
		p, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
		if err != nil {
			return nil, nil, fmt.Errorf("key %q: %w", k.Kid, err)
		}
		pub = p
	case "RSA":
		n, errN := dec(k.N)
		e, errE := dec(k.E)
		if errN != nil || errE != nil || len(n) < 256 || len(e) == 0 || len(e) > 4 {
			return nil, nil, fmt.Errorf("key %q: bad or short (<2048 bit) RSA key", k.Kid)
		}
		pub = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		algs = []string{"RS256", "RS384", "RS512"}
	case "OKP":
		x, err := dec(k.X)
		if k.Crv != "Ed25519" || err != nil || len(x) != ed25519.PublicKeySize {
			return nil, nil, fmt.Errorf("key %q: only Ed25519 OKP keys are supported", k.Kid)
		}
		pub, algs = ed25519.PublicKey(x), []string{"EdDSA"}
	default:
		return nil, nil, fmt.Errorf("key %q: unsupported key type %q", k.Kid, k.Kty)
	}
	if k.Alg != "" {
		if !containsString(algs, k.Alg) && !(k.Kty == "RSA" && (k.Alg == "PS256" || k.Alg == "PS384" || k.Alg == "PS512")) {
			return nil, nil, fmt.Errorf("key %q: algorithm %q does not fit key type %s", k.Kid, k.Alg, k.Kty)
		}
		algs = []string{k.Alg}
	}
	return pub, algs, nil
}

func containsString(ss []string, s string) bool {
	for _, v := range ss {
		if v == s {
			return true
		}
	}
	return false
}

// marshalJWKS encodes a key set.
func marshalJWKS(keys ...JWK) []byte {
	data, _ := json.Marshal(JWKS{Keys: keys}) // cannot fail: strings only
	return data
}
