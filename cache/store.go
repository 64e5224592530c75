package cache

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/ristretto/v2"
)

// Config sizes a Store.
type Config struct {
	// MaxCost is the memory budget in bytes (ristretto's MaxCost).
	MaxCost int64
	// TTL is how long an entry lives after it was last stored or used, on
	// the clock whose times the caller passes.
	TTL time.Duration
}

// Store is the proxy's state: sessions, user directories and host facts,
// all in one ristretto cache so that one byte budget bounds them all.
type Store struct {
	cache *ristretto.Cache[string, any]
	keys  *keyer
	ttl   atomic.Int64 // nanoseconds an entry lives after it was last stored or used
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

// Session returns the session stored under k, if any has lived at now.
func (s *Store) Session(k Key, now time.Time) (*Session, bool) {
	sess := entry[Session](s, "", string(k), now)
	return sess, sess != nil
}

// UserKey derives the key of a user of host from what names the user to
// the server. For Basic credentials that is the email and the API key:
// Zulip accepts any spelling of the email that Python's lower() maps to
// the account's, and two accounts may share one (the Kelvin sign and K),
// so the email alone does not tell users apart; the key does. For a
// browser session it is the delivery email of its own profile, which
// Zulip keeps unique in a realm up to ASCII case, and the user id, since
// an address one user gave up may become another's. The caller folds
// ASCII case, and nothing more (caddymodule's lowerASCII).
func (s *Store) UserKey(host string, parts ...string) UserKey {
	return UserKey(s.keys.key(prefixUser, host, FamilyAPI, parts...))
}

// RowFor returns the mirror of a user's presence row, creating it if needed,
// and renews its time to live. Call it only for a user whose credentials
// the server accepted. A row evicted or expired and made anew knows
// nothing, which makes the gate forward until it has read the row again.
func (s *Store) RowFor(k UserKey, now time.Time) *RowMirror {
	return renewed(s, entryFor(s, "", string(k), now, rowCost, func() *RowMirror { return &RowMirror{} }), now)
}

// Row returns the mirror of a user's row if there is one, and renews its
// time to live: a request of the user is using it. It creates nothing
// (RowFor does, as HostFor does for Host).
func (s *Store) Row(k UserKey, now time.Time) *RowMirror {
	r := entry[RowMirror](s, "", string(k), now)
	if r == nil {
		return nil
	}
	return renewed(s, r, now)
}

// Acquire returns the session of k for one request, which must Release it
// when done, on every path. A session the store does not keep yet is
// shared by the requests that hold it and kept only once Keep is called.
func (s *Store) Acquire(k Key, now time.Time) *Session {
	if sess, ok := s.Session(k, now); ok {
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

// Keep stores the session at its current cost and renews its time to
// live. Call it only after the server accepted the session's credentials.
func (s *Store) Keep(k Key, sess *Session, now time.Time) {
	s.put(string(k), sess, sess.cost.Load(), now)
}

// put stores v under key at cost, and renews its lease. Ristretto is told
// only of a new entry or a changed cost: every Set wakes its policy
// goroutine, which on a busy proxy costs more than the rest of a
// forwarded request's handling.
func (s *Store) put(key string, v leased, cost int64, now time.Time) {
	l := v.lease()
	l.renew(now, time.Duration(s.ttl.Load()))
	if was := l.cost.Swap(cost); was != cost {
		s.charge(key, v, cost, cost-was)
	}
}

// charge hands ristretto v under key at cost, grown bytes more than what
// the key held.
func (s *Store) charge(key string, v any, cost, grown int64) {
	if grown > 0 && s.Used()+grown > s.cache.MaxCost() {
		// Ristretto evicts only to admit new keys; an update that grows
		// an entry past the budget would stay over it. Re-adding the
		// entry makes room the way a new key does (or, if ristretto
		// refuses it, costs one more fetch).
		s.cache.Del(key)
	}
	s.set(key, v, cost)
}

// Forget drops the session stored under k and its trust: the server
// refused its credentials.
func (s *Store) Forget(k Key, sess *Session) {
	sess.Revoke()
	sess.stored.cost.Store(0)
	s.cache.Del(string(k))
}

// Directory returns the user directory of a host, or nil.
func (s *Store) Directory(host string, now time.Time) *Directory {
	return entry[Directory](s, prefixDirectory, host, now)
}

// PutDirectory stores the user directory of a host.
func (s *Store) PutDirectory(host string, d *Directory, now time.Time) {
	cost := d.cost()
	grown := cost
	if old := s.Directory(host, now); old != nil {
		grown -= old.stored.cost.Load()
	}
	d.stored.renew(now, time.Duration(s.ttl.Load()))
	d.stored.cost.Store(cost)
	s.charge(prefixDirectory+host, d, cost, grown)
}

// Host returns what the store knows of a host, or nil.
func (s *Store) Host(host string, now time.Time) *Host {
	return entry[Host](s, prefixHost, host, now)
}

// HostFor returns the Host of host, creating it if needed, and renews its
// time to live. Call it only once the server accepted a session of the
// host.
func (s *Store) HostFor(host string, now time.Time) *Host {
	return renewed(s, entryFor(s, prefixHost, host, now, hostCost, func() *Host { return &Host{} }), now)
}

// RenewHost renews the time to live of h, a Host the store handed out, at
// now: its server answered a success. It costs no lookup.
func (s *Store) RenewHost(h *Host, now time.Time) { renewed(s, h, now) }

// InternPingHeader returns the template of hdr, answered to a request
// asking for lang, that host h shares among its sessions
// (Host.internPingHeader), charging the host anew when its templates
// changed. hdr must not be modified afterwards.
func (s *Store) InternPingHeader(host string, h *Host, hdr map[string][]string, lang Language, now time.Time) *PingHeader {
	p, added := h.internPingHeader(hdr, lang)
	if added {
		s.put(prefixHost+host, h, h.cost(), now)
	}
	return p
}

// View returns the shared-mode view of a host, or nil.
func (s *Store) View(host string, now time.Time) *View {
	return entry[View](s, prefixView, host, now)
}

// ViewFor returns the view of host, creating it if needed; only KeepView,
// when a fetch fed the view, renews its time to live. Call it only
// for a host where an eligible session was trusted, so that made-up Host
// headers cannot grow memory.
func (s *Store) ViewFor(host string, now time.Time) *View {
	return entryFor(s, prefixView, host, now, viewBaseCost, func() *View {
		s.viewHosts.Store(host, struct{}{})
		return &View{}
	})
}

// KeepView charges the view what it holds now, and renews its time to
// live, so that a view no fetch fed for that long is dropped, not trusted.
func (s *Store) KeepView(host string, v *View, now time.Time) {
	s.put(prefixView+host, v, v.cost(), now)
}

// entry returns the entry of type T stored under prefix+name, or nil if
// there is none or it expired by now. An expired entry stays in
// ristretto, unused, until ristretto evicts it to make room or a new
// entry takes its key: expiry follows the handler's clock, which
// ristretto's own TTL cannot.
func entry[T any](s *Store, prefix, name string, now time.Time) *T {
	v, ok := s.cache.Get(prefix + name)
	if !ok {
		return nil
	}
	l, ok := v.(leased)
	if !ok || !l.lease().live(now) {
		return nil
	}
	t, _ := v.(*T)
	return t
}

// entryFor returns the entry stored under prefix+name, storing a new one
// if there is none. One lock for all kinds is enough: entries are created
// once per user or host.
func entryFor[T any, P interface {
	*T
	leased
}](s *Store, prefix, name string, now time.Time, cost int64, create func() *T) *T {
	if t := entry[T](s, prefix, name, now); t != nil {
		return t
	}
	s.createMu.Lock()
	defer s.createMu.Unlock()
	if t := entry[T](s, prefix, name, now); t != nil {
		return t
	}
	t := create()
	s.put(prefix+name, P(t), cost, now)
	return t
}

// renewed renews e's lease at now and returns e.
func renewed[E leased](s *Store, e E, now time.Time) E {
	e.lease().renew(now, time.Duration(s.ttl.Load()))
	return e
}

// ViewInfo describes a held view, for the admin API.
type ViewInfo struct {
	Host   string
	Rows   int
	Bytes  int64
	Cursor int64
}

// Views lists the views the store holds at now.
func (s *Store) Views(now time.Time) []ViewInfo {
	var out []ViewInfo
	s.viewHosts.Range(func(k, _ any) bool {
		host := k.(string)
		v := s.View(host, now)
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

// set hands an entry to ristretto, and waits until it is applied (Sets are
// asynchronous), so that the next request finds it and what the store
// reports holds.
func (s *Store) set(key string, v any, cost int64) {
	if s.cache.Set(key, v, cost) {
		s.cache.Wait()
	}
}

// MaxCost is the store's memory budget in bytes.
func (s *Store) MaxCost() int64 { return s.cache.MaxCost() }

// lease is what the store keeps with each entry: when it expires, on the
// handler's clock, and the cost ristretto was last given (0: not stored).
type lease struct {
	expires atomic.Int64 // Unix nanoseconds
	cost    atomic.Int64
}

// leased is an entry of the store.
type leased interface{ lease() *lease }

func (l *lease) live(now time.Time) bool { return now.UnixNano() < l.expires.Load() }

func (l *lease) renew(now time.Time, ttl time.Duration) {
	l.expires.Store(now.Add(ttl).UnixNano())
}

func (s *Session) lease() *lease   { return &s.stored }
func (r *RowMirror) lease() *lease { return &r.stored }
func (d *Directory) lease() *lease { return &d.stored }
func (h *Host) lease() *lease      { return &h.stored }
func (v *View) lease() *lease      { return &v.stored }
