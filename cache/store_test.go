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

func TestLoadOrCreateKeepsSessions(t *testing.T) {
	s := newStore(t)
	k := s.SessionKey("h", FamilyAPI, "a")
	sess := s.LoadOrCreate(k)
	if got := s.LoadOrCreate(k); got != sess {
		t.Fatal("a stored session was not found again")
	}
	s.Forget(k)
	if _, ok := s.Session(k); ok {
		t.Fatal("a forgotten session is still stored")
	}
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
		sess := s.LoadOrCreate(k)
		conv := sess.LockConversion()
		rows := make([]presence.Row, 200)
		for j := range rows {
			rows[j] = presence.Row{UserID: int64(j)}
		}
		conv.Snapshot.Replace(rows)
		sess.UnlockConversion()
		s.Keep(k, sess)
	}
	for i := range 20_000 {
		k := s.SessionKey("h", FamilyAPI, fmt.Sprint(i))
		s.Keep(k, s.LoadOrCreate(k))
	}
	s.cache.Wait()
	if used := s.Used(); used > 1<<20 {
		t.Fatalf("store holds %d bytes, budget is %d", used, 1<<20)
	}
}

func TestDirectoryMergeKeepsOthers(t *testing.T) {
	s := newStore(t)
	full := (*Directory)(nil).Merged(map[int64]Member{1: {Email: "a@x", Active: true}, 2: {Email: "b@x", Active: true}}, t0)
	s.PutDirectory("h", full)
	guest := s.Directory("h").Merged(map[int64]Member{2: {Email: "b@x", Active: false}}, t0.Add(time.Minute))
	s.PutDirectory("h", guest)
	got := s.Directory("h")
	if got.Members[1].Email != "a@x" || got.Members[2].Active || !got.FetchedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("merged directory = %+v", got)
	}
	if full.Members[2].Active != true {
		t.Fatal("Merged changed the directory it was called on")
	}
}

func TestIncrementalUnsupported(t *testing.T) {
	s := newStore(t)
	if s.IncrementalUnsupported("h", t0) {
		t.Fatal("unknown host marked")
	}
	s.MarkIncrementalUnsupported("h", t0.Add(10*time.Minute))
	if !s.IncrementalUnsupported("h", t0.Add(time.Minute)) || s.IncrementalUnsupported("h", t0.Add(10*time.Minute)) {
		t.Fatal("the mark must hold until the given time, and no longer")
	}
	if s.IncrementalUnsupported("other", t0) {
		t.Fatal("the mark leaked to another host")
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
		sess := s.LoadOrCreate(k)
		conv := sess.LockConversion()
		conv.Snapshot.Replace(rows)
		sess.UnlockConversion()
		s.Keep(k, sess)
	}
	s.cache.Wait()
	if used := s.Used(); used > 1<<20 {
		t.Fatalf("store holds %d bytes, budget is %d", used, 1<<20)
	}
}

// TestKeepRenewsTimeToLive: Keep stores an unchanged session again only now
// and then, but often enough that a session in use never expires, while
// one left alone does. Ristretto's TTL runs on the real clock.
func TestKeepRenewsTimeToLive(t *testing.T) {
	const ttl = 2 * time.Second
	s, err := New(Config{MaxCost: 1 << 20, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destruct()
	k := s.SessionKey("h", FamilyAPI, "kept")
	sess := s.LoadOrCreate(k)
	for end := time.Now().Add(ttl * 3 / 2); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		s.Keep(k, sess)
		s.cache.Wait()
		if got, ok := s.Session(k); !ok || got != sess {
			t.Fatal("a session kept in use expired")
		}
	}
	time.Sleep(ttl + 100*time.Millisecond)
	if _, ok := s.Session(k); ok {
		t.Fatal("a session left alone outlived its time to live")
	}
}
