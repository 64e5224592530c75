package cache

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"hash"
	"sync"
)

// Family tells apart the two URL prefixes Zulip serves its API under; a
// credential valid on one is not accepted on the other.
type Family byte

const (
	// FamilyAPI is /api/v1/, authenticated with HTTP Basic.
	FamilyAPI Family = 'a'
	// FamilyJSON is /json/, authenticated with a session cookie and CSRF token.
	FamilyJSON Family = 'j'
)

// Key names one session's state. It is an HMAC of the credentials, so raw
// credentials are never stored and keys cannot be forged or guessed; it
// is used as the cache key as it is.
type Key string

// keyer derives session keys with a secret made at start-up.
type keyer struct {
	pool sync.Pool // of *hasher, to keep HMAC setup off the request path
}

type hasher struct {
	mac hash.Hash
	buf []byte
}

func newKeyer() (*keyer, error) {
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, err
	}
	k := &keyer{}
	k.pool.New = func() any {
		return &hasher{mac: hmac.New(sha256.New, secret), buf: make([]byte, 0, 512)}
	}
	return k, nil
}

// key hashes the host, the family and each credential part. Parts are
// length-prefixed so that ("ab","c") and ("a","bc") never collide.
func (k *keyer) key(prefix, host string, family Family, parts ...string) string {
	h := k.pool.Get().(*hasher)
	defer k.pool.Put(h)
	b := appendPart(h.buf[:0], host)
	b = append(b, byte(family))
	for _, p := range parts {
		b = appendPart(b, p)
	}
	h.mac.Reset()
	h.mac.Write(b)
	// The cache prefix goes in front here, so that looking a session up
	// costs no second allocation.
	b = h.mac.Sum(append(b[:0], prefix...))
	h.buf = b[:0]
	return string(b)
}

func appendPart(b []byte, s string) []byte {
	n := len(s)
	b = append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	return append(b, s...)
}
