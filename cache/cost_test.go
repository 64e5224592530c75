package cache

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// heapOf fills a fresh store with n entries and returns the heap they hold
// (after a collection, ristretto's bookkeeping of them included) and the
// bytes the store charged for them.
func heapOf(t testing.TB, n int, fill func(s *Store, i int)) (heap, charged float64) {
	t.Helper()
	s, err := New(Config{MaxCost: 4 << 30, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Destruct()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	used := s.Used()
	for i := range n {
		fill(s, i)
	}
	s.cache.Wait()
	runtime.GC()
	runtime.ReadMemStats(&after)
	charged = float64(s.Used() - used)
	heap = float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
	runtime.KeepAlive(s)
	return heap, charged
}

// costCases are the kinds of entries a store holds, as the handler makes
// them: sessions (empty, and with the snapshot of a 300-user realm), row
// mirrors, host facts, user directories and shared-mode views (of a
// 500-user realm, 300 of whose rows changed since the last full fetch).
var costCases = []struct {
	name string
	n    int
	fill func(s *Store, i int)
}{
	{"session", 20_000, func(s *Store, i int) { keep(s, s.SessionKey("h", FamilyAPI, fmt.Sprint(i))) }},
	{"session with snapshot", 2_000, func(s *Store, i int) {
		k := s.SessionKey("h", FamilyAPI, fmt.Sprint(i))
		sess := keep(s, k)
		conv := sess.LockConversion()
		rows := make([]presence.Row, 300)
		for j := range rows {
			rows[j] = presence.Row{UserID: int64(j)}
		}
		conv.Snapshot.Replace(rows)
		sess.UnlockConversion()
		s.Keep(k, sess, t0)
	}},
	{"row", 20_000, func(s *Store, i int) {
		s.RowFor(s.UserKey("h", fmt.Sprint(i, "@x")), t0).SetUser(int64(i), t0, time.Microsecond)
	}},
	{"host", 5_000, func(s *Store, i int) { hostWith(s, i, 1) }},
	{"host with 4 languages", 5_000, func(s *Store, i int) { hostWith(s, i, 4) }},
	{"view", 500, func(s *Store, i int) {
		host := fmt.Sprint("zulip", i, ".example")
		v := s.ViewFor(host, t0)
		rows := make([]presence.Row, 500)
		for j := range rows {
			rows[j] = presence.Row{UserID: int64(j), Presence: presence.Presence{Active: 1000, Idle: 1000}}
		}
		v.Apply(-1, 14, presence.Decoded{Rows: rows, LastUpdateID: 500, HasLastUpdateID: true}, t0)
		for j := range 300 {
			rows := []presence.Row{{UserID: int64(j), Presence: presence.Presence{Active: 2000, Idle: 2000}}}
			v.Apply(int64(500+j), 14, presence.Decoded{Rows: rows, LastUpdateID: int64(501 + j), HasLastUpdateID: true}, t0)
		}
		s.KeepView(host, v, t0)
	}},
	{"directory", 200, func(s *Store, i int) {
		m := make(map[int64]Member, 500)
		for j := range 500 {
			m[int64(j)] = Member{Email: fmt.Sprintf("user%d@zulip.example", j), Active: true}
		}
		s.PutDirectory(fmt.Sprint("zulip", i, ".example"), (*Directory)(nil).Merged(m, t0, true, 1), t0)
	}},
}

// hostWith makes host i with the ping header templates of n languages, as
// the handler interns them from its sessions' answers.
func hostWith(s *Store, i, n int) {
	name := fmt.Sprint("zulip", i, ".example")
	h := s.HostFor(name, t0)
	h.ObserveClock(t0, t0, t0, time.Second)
	for _, lang := range []string{"en", "de", "fr", "ja"}[:n] {
		s.InternPingHeader(name, h, map[string][]string{
			"Content-Type":     {"application/json"},
			"Cache-Control":    {"max-age=0, no-cache, no-store, must-revalidate, private"},
			"Expires":          nil,
			"Date":             nil,
			"Vary":             {"Accept-Language, Cookie"},
			"Content-Language": {lang},
		}, Language{Accept: lang}, t0)
	}
}

// TestCostsMatchHeap: what the store charges against cache_size is within
// 1.5× of the heap its entries hold, either way, so that cache_size bounds
// memory.
func TestCostsMatchHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("measures the heap of many entries")
	}
	for _, tc := range costCases {
		t.Run(tc.name, func(t *testing.T) {
			heap, charged := heapOf(t, tc.n, tc.fill)
			ratio := heap / charged
			t.Logf("%s: %.0f heap bytes, %.0f charged per entry: heap/charged %.2f", tc.name, heap/float64(tc.n), charged/float64(tc.n), ratio)
			if ratio > 1.5 || ratio < 1/1.5 {
				t.Fatalf("heap/charged = %.2f, want within 1.5× either way", ratio)
			}
		})
	}
}

// BenchmarkCostAccuracy reports heap/charged for each kind of entry.
func BenchmarkCostAccuracy(b *testing.B) {
	for _, tc := range costCases {
		b.Run(tc.name, func(b *testing.B) {
			var heap, charged float64
			for range b.N {
				h, c := heapOf(b, tc.n, tc.fill)
				heap, charged = heap+h, charged+c
			}
			b.ReportMetric(heap/charged, "heap/charged")
			b.ReportMetric(heap/float64(b.N*tc.n), "heapB/entry")
		})
	}
}

// TestHostChargedForLanguages: a host is charged for each template's
// language bytes, anew when a full ring replaces one.
func TestHostChargedForLanguages(t *testing.T) {
	s := newStore(t)
	h := s.HostFor("h", t0)
	hdr := map[string][]string{"Content-Type": {"application/json"}}
	long := strings.Repeat("x", 200)
	for i := range maxPingHeaders {
		s.InternPingHeader("h", h, hdr, Language{Accept: fmt.Sprint(i)}, t0)
	}
	short := h.cost()
	for i := range maxPingHeaders {
		s.InternPingHeader("h", h, hdr, Language{Accept: long + fmt.Sprint(i)}, t0)
	}
	if got, want := h.cost(), short+int64(maxPingHeaders*200); got < want {
		t.Fatalf("cost %d after long languages replaced short ones, want at least %d", got, want)
	}
	if used := s.Used(); used < h.cost() {
		t.Fatalf("the store charges %d in all, the host costs %d", used, h.cost())
	}
}
