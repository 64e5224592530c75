package cache

import (
	"fmt"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(Config{MaxCost: 8 << 20, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Destruct() })
	return s
}

func TestSessionKeys(t *testing.T) {
	s := newStore(t)
	base := s.SessionKey("zulip.example", FamilyAPI, "Basic abc")
	if base != s.SessionKey("zulip.example", FamilyAPI, "Basic abc") {
		t.Fatal("the same credentials gave two keys")
	}
	others := []Key{
		s.SessionKey("other.example", FamilyAPI, "Basic abc"),
		s.SessionKey("zulip.example", FamilyJSON, "Basic abc"),
		s.SessionKey("zulip.example", FamilyAPI, "Basic abd"),
		s.SessionKey("zulip.example", FamilyAPI, "Basic ab", "c"),
	}
	for i, k := range others {
		if k == base {
			t.Errorf("key %d collides with the base key", i)
		}
	}
	if len(base) != len(prefixSession)+32 {
		t.Errorf("key is %d bytes, want a prefixed HMAC-SHA256", len(base))
	}
	other, err := New(Config{MaxCost: 1 << 20, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Destruct()
	if other.SessionKey("zulip.example", FamilyAPI, "Basic abc") == base {
		t.Fatal("two stores share a secret")
	}
}

// TestPendingSessions: concurrent requests of a session the server has not
// accepted share it, and nothing of it stays once they are done; a kept
// session is found again until it is forgotten.
func TestPendingSessions(t *testing.T) {
	s := newStore(t)
	k := s.SessionKey("h", FamilyAPI, "a")
	a, b := s.Acquire(k, t0), s.Acquire(k, t0)
	if a != b {
		t.Fatal("two requests of one new session got two sessions")
	}
	s.Release(k, a)
	s.Release(k, b)
	if _, ok := s.Session(k, t0); ok || s.Pending() != 0 {
		t.Fatal("a session the server never accepted outlived its requests")
	}
	sess := s.Acquire(k, t0)
	s.Keep(k, sess, t0)
	s.Release(k, sess)
	if got := s.Acquire(k, t0); got != sess {
		t.Fatal("a kept session was not found again")
	}
	s.Release(k, sess)
	s.Forget(k, sess)
	if _, ok := s.Session(k, t0); ok {
		t.Fatal("a forgotten session is still stored")
	}
	if sess.Trusted(time.Now(), time.Hour) {
		t.Fatal("a forgotten session is still trusted")
	}
}

// keep stores a session as if the server had accepted it.
func keep(s *Store, k Key) *Session {
	sess := s.Acquire(k, t0)
	s.Keep(k, sess, t0)
	s.Release(k, sess)
	return sess
}

// TestStoreIsBounded: a flood of new credentials evicts; it does not grow
// past the budget.
func TestStoreIsBounded(t *testing.T) {
	s, err := New(Config{MaxCost: 1 << 20, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destruct()
	// Some sessions with snapshots first, then the flood.
	for i := range 100 {
		k := s.SessionKey("h", FamilyAPI, fmt.Sprint("snap", i))
		sess := keep(s, k)
		conv := sess.LockConversion()
		rows := make([]presence.Row, 200)
		for j := range rows {
			rows[j] = presence.Row{UserID: int64(j)}
		}
		conv.Snapshot.Replace(rows)
		sess.UnlockConversion()
		s.Keep(k, sess, t0)
	}
	for i := range 20_000 {
		keep(s, s.SessionKey("h", FamilyAPI, fmt.Sprint(i)))
	}
	s.cache.Wait()
	if used := s.Used(); used > 1<<20 {
		t.Fatalf("store holds %d bytes, budget is %d", used, 1<<20)
	}
}

// TestDirectoryMerge: of a guest's list only the guest's own entry is
// taken, whatever else it says (a restricted guest's list shows users it
// cannot access as made-up active members), and it makes the directory
// fresh for nobody; a complete list replaces the directory.
func TestDirectoryMerge(t *testing.T) {
	s := newStore(t)
	full := (*Directory)(nil).Merged(map[int64]Member{1: {Email: "a@x", Active: true}, 2: {Email: "b@x", Active: false}}, t0, true, 1)
	s.PutDirectory("h", full, t0)
	later := t0.Add(20 * time.Minute)
	fake := map[int64]Member{
		2: {Email: "user2@fake.invalid", Active: true},
		3: {Email: "user3@fake.invalid", Active: true},
		7: {Email: "g@x", Active: true, Guest: true},
	}
	guest := s.Directory("h", t0).Merged(fake, later, false, 7)
	s.PutDirectory("h", guest, t0)
	got := s.Directory("h", t0)
	switch {
	case got.Members[2] != full.Members[2]:
		t.Fatalf("a guest's list changed another user: %+v", got.Members[2])
	case got.Members[3] != (Member{}):
		t.Fatalf("a guest's list added another user: %+v", got.Members[3])
	case !got.Members[7].Guest:
		t.Fatal("the guest's own entry was not taken")
	case got.Fresh(later, 10*time.Minute):
		t.Fatal("a guest's list made the directory fresh")
	case !got.CheckedGuest(7, later, 10*time.Minute) || got.CheckedGuest(8, later, 10*time.Minute):
		t.Fatal("the guest's own check is not recorded for that guest alone")
	}
	complete := got.Merged(map[int64]Member{2: {Email: "b@x", Active: true}}, later, true, 1)
	if _, ok := complete.Members[1]; ok || !complete.Fresh(later, 10*time.Minute) {
		t.Fatalf("a complete list did not replace the directory: %+v", complete)
	}
}

func TestHostFacts(t *testing.T) {
	s := newStore(t)
	if s.Host("h", t0) != nil {
		t.Fatal("a host nobody was accepted on has facts")
	}
	h := s.HostFor("h", t0)
	if h.IncrementalUnsupported(t0) {
		t.Fatal("unknown host marked")
	}
	h.MarkIncrementalUnsupported(t0.Add(10 * time.Minute))
	if !h.IncrementalUnsupported(t0.Add(time.Minute)) || h.IncrementalUnsupported(t0.Add(10*time.Minute)) {
		t.Fatal("the mark must hold until the given time, and no longer")
	}
	if s.HostFor("h", t0) != h || s.HostFor("other", t0).IncrementalUnsupported(t0) {
		t.Fatal("the mark leaked to another host")
	}
}

// TestServerClock: exchanges narrow the interval the server's clock lies
// in; one that contradicts it (a clock that jumped) starts it over.
func TestServerClock(t *testing.T) {
	h := &Host{}
	if _, known := h.ServerLatest(t0); known {
		t.Fatal("a clock never observed is known")
	}
	skew := 42 * time.Second
	// Sent at 0, answered at 2, the server's Date said 0+skew (whole second).
	h.ObserveClock(at(0), at(2), at(0).Add(skew), time.Second)
	if got, _ := h.ServerLatest(at(10)); !got.Equal(at(11).Add(skew)) {
		t.Fatalf("latest server time %v, want %v", got, at(11).Add(skew))
	}
	// An exact server_timestamp of a quick exchange narrows it.
	h.ObserveClock(at(20), at(20.1), at(20.05).Add(skew), 0)
	latest, _ := h.ServerLatest(at(30))
	if d := latest.Sub(at(30).Add(skew)); d < 0 || d > 100*time.Millisecond {
		t.Fatalf("latest server time is %v after the true one, want within 100ms", d)
	}
	if est := h.ServerEstimate(at(30)); est.Sub(at(30).Add(skew)).Abs() > 100*time.Millisecond {
		t.Fatalf("estimate off by %v", est.Sub(at(30).Add(skew)))
	}
	// The server's clock jumps back a minute.
	h.ObserveClock(at(40), at(40), at(40).Add(skew-time.Minute), 0)
	if got, _ := h.ServerLatest(at(50)); !got.Equal(at(50).Add(skew - time.Minute)) {
		t.Fatalf("after the jump the latest server time is %v, want %v", got, at(50).Add(skew-time.Minute))
	}
}

func TestNeedsFullFetch(t *testing.T) {
	c := &Conversion{}
	if !c.NeedsFullFetch(t0, 14, 10*time.Minute) {
		t.Fatal("an empty conversion must start with a full fetch")
	}
	c.Synced, c.Days, c.SyncedAt = true, 14, t0
	switch {
	case c.NeedsFullFetch(t0.Add(9*time.Minute), 14, 10*time.Minute):
		t.Fatal("resynced before the interval")
	case !c.NeedsFullFetch(t0.Add(10*time.Minute), 14, 10*time.Minute):
		t.Fatal("no resync after the interval")
	case !c.NeedsFullFetch(t0, 30, 10*time.Minute):
		t.Fatal("a wider window needs a full fetch")
	case c.NeedsFullFetch(t0, 7, 10*time.Minute):
		t.Fatal("a narrower window is filtered from the snapshot")
	}
}

// TestGrowingSessionsStayBounded: snapshots that grow after their session
// was stored still count against the budget.
func TestGrowingSessionsStayBounded(t *testing.T) {
	s, err := New(Config{MaxCost: 1 << 20, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destruct()
	rows := make([]presence.Row, 1000)
	for j := range rows {
		rows[j] = presence.Row{UserID: int64(j)}
	}
	for i := range 200 {
		k := s.SessionKey("h", FamilyAPI, fmt.Sprint(i))
		sess := keep(s, k)
		conv := sess.LockConversion()
		conv.Snapshot.Replace(rows)
		sess.UnlockConversion()
		s.Keep(k, sess, t0)
	}
	s.cache.Wait()
	if used := s.Used(); used > 1<<20 {
		t.Fatalf("store holds %d bytes, budget is %d", used, 1<<20)
	}
}

// TestKeepRenewsTimeToLive: time to live runs on the clock the caller
// passes. A session kept in use never expires, however long it lives; one
// left alone expires a time to live after it was last kept, and a new
// session then takes its key. Rows (looked up or made) and hosts live on
// while in use, and a view while it is fed, not while it is only looked
// up.
func TestKeepRenewsTimeToLive(t *testing.T) {
	const ttl = 10 * time.Minute
	s, err := New(Config{MaxCost: 1 << 20, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destruct()
	k := s.SessionKey("h", FamilyAPI, "kept")
	sess := keep(s, k)
	row, looked := s.RowFor(s.UserKey("h", "a@x"), t0), s.RowFor(s.UserKey("h", "b@x"), t0)
	host, view := s.HostFor("h", t0), s.ViewFor("h", t0)
	unfed := s.ViewFor("unfed", t0)
	now := t0
	for ; now.Before(t0.Add(3 * ttl)); now = now.Add(ttl / 3) {
		if now.Sub(t0) < ttl && s.ViewFor("unfed", now) != unfed {
			t.Fatalf("a view expired %v after it was made, before its time to live", now.Sub(t0))
		}
		s.Keep(k, sess, now)
		s.KeepView("h", view, now)
		if got, ok := s.Session(k, now); !ok || got != sess {
			t.Fatalf("a session kept in use expired at %v", now.Sub(t0))
		}
		if s.RowFor(s.UserKey("h", "a@x"), now) != row || s.Row(s.UserKey("h", "b@x"), now) != looked ||
			s.HostFor("h", now) != host || s.View("h", now) != view {
			t.Fatalf("a row, host or view in use expired at %v", now.Sub(t0))
		}
	}
	if s.View("unfed", t0.Add(ttl)) != nil {
		t.Fatal("a view no fetch fed outlived its time to live: looking it up renewed it")
	}
	last := now.Add(-ttl / 3)
	if _, ok := s.Session(k, last.Add(ttl-time.Nanosecond)); !ok {
		t.Fatal("a session expired before its time to live")
	}
	gone := last.Add(ttl)
	if _, ok := s.Session(k, gone); ok {
		t.Fatal("a session left alone outlived its time to live")
	}
	if s.Row(s.UserKey("h", "a@x"), gone) != nil || s.Host("h", gone) != nil || s.View("h", gone) != nil || len(s.Views(gone)) != 0 {
		t.Fatal("a row, host or view left alone outlived its time to live")
	}
	if fresh := s.Acquire(k, gone); fresh == sess {
		t.Fatal("an expired session was handed out again")
	} else if s.Keep(k, fresh, gone); s.Acquire(k, gone) != fresh {
		t.Fatal("a new session did not take an expired one's key")
	}
	if s.RowFor(s.UserKey("h", "a@x"), gone) == row {
		t.Fatal("an expired row was handed out again")
	}
}
