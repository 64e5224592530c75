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
	// createMu is held while an entry that must exist once (a user's row,
	// a host's facts or view) is made.
	createMu sync.Mutex

	// Sessions the server has not accepted yet live only while requests
	// hold them: a flood of credentials the server refuses costs nothing
	// once its requests are done, and concurrent requests of a new session
	// still share one gate.
	pendingMu sync.Mutex
	pending   map[Key]*pendingSession

	viewHosts sync.Map // hosts a view was made for, to list them
}

type pendingSession struct {
	sess *Session
	refs int
}

// Key prefixes keep the five kinds of entries apart in one cache: sessions
// (whose keys carry their prefix from the keyer), users' row mirrors, user
// lists, hosts and shared-mode views.
const (
	prefixSession   = "s"
	prefixUser      = "u"
	prefixDirectory = "d"
	prefixHost      = "h"
	prefixView      = "v"
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
	s := &Store{cache: c, keys: keys, pending: make(map[Key]*pendingSession)}
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

// RowFor returns the mirror of a user's presence row, creating it if needed.
// Call it only for a user whose credentials the server accepted. A row
// evicted and made anew knows nothing, which makes the gate forward until
// it has read the row again.
func (s *Store) RowFor(k UserKey) *RowMirror {
	return entryFor(s, "", string(k), rowCost, func() *RowMirror { return &RowMirror{} })
}

// Row returns the mirror of a user's row if there is one; it creates
// nothing (RowFor does, as HostFor does for Host).
func (s *Store) Row(k UserKey) *RowMirror { return entry[RowMirror](s, "", string(k)) }

// Acquire returns the session of k for one request, which must Release it
// when done, on every path. A session the store does not keep yet is
// shared by the requests that hold it and kept only once Keep is called.
func (s *Store) Acquire(k Key) *Session {
	if sess, ok := s.Session(k); ok {
		return sess
	}
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	p := s.pending[k]
	if p == nil {
		sess := &Session{}
		sess.cost.Store(sessionBaseCost)
		p = &pendingSession{sess: sess}
		s.pending[k] = p
	}
	p.refs++
	return p.sess
}

// Release ends one request's hold on a session from Acquire.
func (s *Store) Release(k Key, sess *Session) {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	if p := s.pending[k]; p != nil && p.sess == sess {
		if p.refs--; p.refs == 0 {
			delete(s.pending, k)
		}
	}
}

// Pending is how many sessions requests hold that the store does not keep.
func (s *Store) Pending() int {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	return len(s.pending)
}

// Keep stores the session with its current cost, which also renews its
// time to live. Call it only after the server accepted the session's
// credentials. A kept session whose cost has not changed is stored again
// only once a quarter of its time to live has passed: every ristretto Set
// wakes its policy goroutine, which on a busy proxy costs more than the
// rest of a forwarded request's handling.
func (s *Store) Keep(k Key, sess *Session) {
	cost := sess.cost.Load()
	now := time.Now().UnixNano()
	if !sess.kept.Swap(true) {
		sess.storedCost.Store(cost)
		sess.storedAt.Store(now)
		if s.set(string(k), sess, cost) {
			// Sets are applied asynchronously; wait so that the
			// session's next request finds it.
			s.cache.Wait()
		}
		return
	}
	if cost == sess.storedCost.Load() && now-sess.storedAt.Load() < s.ttl.Load()/4 {
		return
	}
	sess.storedAt.Store(now)
	s.restore(string(k), sess, cost, cost-sess.storedCost.Swap(cost))
}

// restore stores again an entry that is stored already, at its cost now,
// grown bytes more than before.
func (s *Store) restore(key string, value any, cost, grown int64) {
	if grown > 0 && s.Used()+grown > s.cache.MaxCost() {
		// Ristretto evicts only to admit new keys; an update that grows
		// an entry past the budget would stay over it. Re-adding the
		// entry makes room the way a new key does (or, if ristretto
		// refuses it, costs one more full fetch).
		s.cache.Del(key)
		if s.set(key, value, cost) {
			s.cache.Wait()
		}
		return
	}
	if s.set(key, value, cost) && grown != 0 {
		// Charged at once, so that what the store reports holds.
		s.cache.Wait()
	}
}

// Forget drops the session stored under k and its trust: the server
// refused its credentials.
func (s *Store) Forget(k Key, sess *Session) {
	sess.Revoke()
	sess.kept.Store(false)
	s.cache.Del(string(k))
}

// Directory returns the user directory of a host, or nil.
func (s *Store) Directory(host string) *Directory { return entry[Directory](s, prefixDirectory, host) }

// PutDirectory stores the user directory of a host.
func (s *Store) PutDirectory(host string, d *Directory) {
	cost := d.cost()
	if old := s.Directory(host); old != nil {
		s.restore(prefixDirectory+host, d, cost, cost-old.cost())
		return
	}
	if s.set(prefixDirectory+host, d, cost) {
		s.cache.Wait()
	}
}

// Host returns what the store knows of a host, or nil.
func (s *Store) Host(host string) *Host { return entry[Host](s, prefixHost, host) }

// HostFor returns the Host of host, creating it if needed. Call it only
// once the server accepted a session of the host.
func (s *Store) HostFor(host string) *Host {
	return entryFor(s, prefixHost, host, hostCost, func() *Host { return &Host{} })
}

// InternPingHeader returns the template of hdr that host h shares among
// its sessions (Host.internPingHeader), charging the host for a new one.
// hdr must not be modified afterwards.
func (s *Store) InternPingHeader(host string, h *Host, hdr map[string][]string) *PingHeader {
	p, added := h.internPingHeader(hdr)
	if added {
		cost := h.cost()
		s.restore(prefixHost+host, h, cost, pingHeaderCost)
	}
	return p
}

// View returns the shared-mode view of a host, or nil.
func (s *Store) View(host string) *View { return entry[View](s, prefixView, host) }

// ViewFor returns the view of host, creating it if needed. Call it only
// for a host where an eligible session was trusted, so that made-up Host
// headers cannot grow memory.
func (s *Store) ViewFor(host string) *View {
	return entryFor(s, prefixView, host, viewBaseCost, func() *View {
		v := &View{}
		v.storedAt.Store(time.Now().UnixNano())
		v.storedCost.Store(viewBaseCost)
		s.viewHosts.Store(host, struct{}{})
		return v
	})
}

// entry returns the entry of type T stored under prefix+name, or nil.
func entry[T any](s *Store, prefix, name string) *T {
	v, ok := s.get(prefix, name)
	if !ok {
		return nil
	}
	t, _ := v.(*T)
	return t
}

// get looks prefix+name up.
func (s *Store) get(prefix, name string) (any, bool) {
	if prefix == "" {
		return s.cache.Get(name)
	}
	return s.cache.Get(prefix + name)
}

// entryFor returns the entry stored under prefix+name, storing a new one
// if there is none. One lock for all kinds is enough: entries are created
// once per user or host.
func entryFor[T any](s *Store, prefix, name string, cost int64, create func() *T) *T {
	if t := entry[T](s, prefix, name); t != nil {
		return t
	}
	s.createMu.Lock()
	defer s.createMu.Unlock()
	if t := entry[T](s, prefix, name); t != nil {
		return t
	}
	t := create()
	if s.set(prefix+name, t, cost) {
		s.cache.Wait()
	}
	return t
}

// KeepView charges the view what it holds now, and renews its time to
// live, so that a view no fetch fed for that long is dropped, not trusted.
// Like Keep, it stores an unchanged view again only now and then.
func (s *Store) KeepView(host string, v *View) {
	cost, now := v.cost(), time.Now().UnixNano()
	if cost == v.storedCost.Load() && now-v.storedAt.Load() < s.ttl.Load()/4 {
		return
	}
	v.storedAt.Store(now)
	s.restore(prefixView+host, v, cost, cost-v.storedCost.Swap(cost))
}

// ViewInfo describes a held view, for the admin API.
type ViewInfo struct {
	Host   string
	Rows   int
	Bytes  int64
	Cursor int64
}

// Views lists the views the store holds.
func (s *Store) Views() []ViewInfo {
	var out []ViewInfo
	s.viewHosts.Range(func(k, _ any) bool {
		host := k.(string)
		v := s.View(host)
		if v == nil {
			s.viewHosts.Delete(host) // evicted or expired
			return true
		}
		out = append(out, v.info(host))
		return true
	})
	return out
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
