package cache

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// Config sizes a Store.
type Config struct {
	// MaxCost is the memory budget in bytes (ristretto's MaxCost).
	MaxCost int64
	// TTL is how long an entry lives after it was last stored.
	TTL time.Duration
}

// Store is the proxy's state: sessions, user directories and host facts,
// all in one ristretto cache so that one byte budget bounds them all.
type Store struct {
	cache *ristretto.Cache[string, any]
	keys  *keyer
	ttl   atomic.Int64
	rowMu sync.Mutex // so that one user never gets two rows at once
}

// Key prefixes keep the three kinds of entries apart in one cache; session
// keys carry theirs from the keyer.
const (
	prefixSession   = "s"
	prefixUser      = "u"
	prefixDirectory = "d"
	prefixHost      = "h"
)

// averageEntryCost is the expected mean entry size, from which ristretto's
// admission counters are sized (it recommends ten per entry at capacity).
const averageEntryCost = 1024

// New builds a Store.
func New(cfg Config) (*Store, error) {
	keys, err := newKeyer()
	if err != nil {
		return nil, err
	}
	c, err := ristretto.NewCache(&ristretto.Config[string, any]{
		NumCounters:        max(cfg.MaxCost/averageEntryCost*10, 10_000),
		MaxCost:            cfg.MaxCost,
		BufferItems:        64,
		IgnoreInternalCost: true,
	})
	if err != nil {
		return nil, err
	}
	s := &Store{cache: c, keys: keys}
	s.ttl.Store(int64(cfg.TTL))
	return s, nil
}

// Reconfigure applies a reloaded configuration to the live store.
func (s *Store) Reconfigure(cfg Config) {
	if cfg.MaxCost != s.cache.MaxCost() {
		s.cache.UpdateMaxCost(cfg.MaxCost)
	}
	s.ttl.Store(int64(cfg.TTL))
}

// Destruct releases the cache; caddy.UsagePool calls it when the last
// configuration using the store is unloaded.
func (s *Store) Destruct() error {
	s.cache.Close()
	return nil
}

// SessionKey derives the key of a session from its host, URL family and
// credential parts.
func (s *Store) SessionKey(host string, family Family, credential ...string) Key {
	return Key(s.keys.key(prefixSession, host, family, credential...))
}

// Session returns the session stored under k, if any.
func (s *Store) Session(k Key) (*Session, bool) {
	v, ok := s.cache.Get(string(k))
	if !ok {
		return nil, false
	}
	sess, ok := v.(*Session)
	return sess, ok
}

// UserKey derives the key of a user from the host and the user's email,
// which Zulip compares without regard to case.
func (s *Store) UserKey(host, email string) UserKey {
	return UserKey(s.keys.key(prefixUser, host, FamilyAPI, strings.ToLower(strings.TrimSpace(email))))
}

// Row returns the mirror of a user's presence row, creating it if needed.
// A row evicted and made anew knows only that nothing was stored after
// now, which makes the gate forward until it has learned the row again.
func (s *Store) Row(k UserKey, now time.Time) *Row {
	if r := s.ExistingRow(k); r != nil {
		return r
	}
	s.rowMu.Lock()
	defer s.rowMu.Unlock()
	if r := s.ExistingRow(k); r != nil {
		return r
	}
	r := newRow(now)
	if s.set(string(k), r, rowCost) {
		s.cache.Wait()
	}
	return r
}

// ExistingRow returns the mirror of a user's row if there is one.
func (s *Store) ExistingRow(k UserKey) *Row {
	v, ok := s.cache.Get(string(k))
	if !ok {
		return nil
	}
	r, _ := v.(*Row)
	return r
}

// rowCost is the memory of a Row.
const rowCost = 96

// LoadOrCreate returns the session stored under k, creating and storing an
// empty one if there is none. Ristretto may refuse to keep the new entry;
// that costs one more forwarded request later, never a wrong answer.
func (s *Store) LoadOrCreate(k Key) *Session {
	if sess, ok := s.Session(k); ok {
		return sess
	}
	sess := &Session{}
	sess.cost.Store(sessionBaseCost)
	sess.storedCost.Store(sessionBaseCost)
	sess.storedAt.Store(time.Now().UnixNano())
	if s.set(string(k), sess, sessionBaseCost) {
		// Sets are applied asynchronously; wait so that the session's
		// next request finds it.
		s.cache.Wait()
	}
	return sess
}

// Keep stores the session again with its current cost, which also renews
// its time to live. A session whose cost has not changed is stored again
// only once a quarter of its time to live has passed: every ristretto Set
// wakes its policy goroutine, which on a busy proxy costs more than the
// rest of a forwarded request's handling.
func (s *Store) Keep(k Key, sess *Session) {
	cost := sess.cost.Load()
	now := time.Now().UnixNano()
	if cost == sess.storedCost.Load() && now-sess.storedAt.Load() < s.ttl.Load()/4 {
		return
	}
	sess.storedAt.Store(now)
	grown := cost - sess.storedCost.Swap(cost)
	if grown > 0 && s.Used()+grown > s.cache.MaxCost() {
		// Ristretto evicts only to admit new keys; an update that grows
		// an entry past the budget would stay over it. Re-adding the
		// session makes room the way a new key does (or, if ristretto
		// refuses it, costs the session one more full fetch).
		s.cache.Del(string(k))
		if s.set(string(k), sess, cost) {
			s.cache.Wait()
		}
		return
	}
	s.set(string(k), sess, cost)
}

// Forget drops the session stored under k.
func (s *Store) Forget(k Key) {
	s.cache.Del(string(k))
}

// Directory returns the user directory of a host, or nil.
func (s *Store) Directory(host string) *Directory {
	v, ok := s.cache.Get(prefixDirectory + host)
	if !ok {
		return nil
	}
	d, _ := v.(*Directory)
	return d
}

// PutDirectory stores the user directory of a host.
func (s *Store) PutDirectory(host string, d *Directory) {
	if s.set(prefixDirectory+host, d, d.cost()) {
		s.cache.Wait()
	}
}

// hostFacts is what the store learned about an upstream host.
type hostFacts struct {
	noIncrementalUntil time.Time
}

// IncrementalUnsupported reports whether the host was found, before now,
// not to understand last_update_id (Zulip before 9.0) and that finding is
// still fresh.
func (s *Store) IncrementalUnsupported(host string, now time.Time) bool {
	v, ok := s.cache.Get(prefixHost + host)
	if !ok {
		return false
	}
	f, _ := v.(*hostFacts)
	return f != nil && now.Before(f.noIncrementalUntil)
}

// MarkIncrementalUnsupported records that the host ignored last_update_id,
// so that conversion stops for it until the given time.
func (s *Store) MarkIncrementalUnsupported(host string, until time.Time) {
	if s.set(prefixHost+host, &hostFacts{noIncrementalUntil: until}, 64) {
		s.cache.Wait()
	}
}

// Used is the cost, in bytes, of what the store holds now.
func (s *Store) Used() int64 {
	return s.cache.MaxCost() - s.cache.RemainingCost()
}

func (s *Store) set(key string, v any, cost int64) bool {
	return s.cache.SetWithTTL(key, v, cost, time.Duration(s.ttl.Load()))
}

// MaxCost is the store's memory budget in bytes.
func (s *Store) MaxCost() int64 { return s.cache.MaxCost() }
