package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/caddymodule"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// MicroResult holds the in-process figures of design §9's targets.
type MicroResult struct {
	PingNs, PingAllocs   float64 // a ping answered locally
	MergeNs              float64 // a 400-row delta merged into 1 500 rows
	SlimNs, LegacyNs     float64 // 1 500 rows rendered
	SnapshotBytesPerRow  float64 // heap of snapshots built like the handler builds them
	SnapshotRowsMeasured int
}

// runMicro runs the in-process benchmarks with testing.Benchmark.
func runMicro() (*MicroResult, error) {
	m := &MicroResult{}
	ping, err := benchLocalPing()
	if err != nil {
		return nil, err
	}
	m.PingNs, m.PingAllocs = float64(ping.NsPerOp()), float64(ping.AllocsPerOp())
	m.MergeNs = float64(testing.Benchmark(benchMerge).NsPerOp())
	m.SlimNs = float64(testing.Benchmark(benchRenderSlim).NsPerOp())
	m.LegacyNs = float64(testing.Benchmark(benchRenderLegacy).NsPerOp())
	m.SnapshotBytesPerRow, m.SnapshotRowsMeasured = snapshotBytesPerRow()
	return m, nil
}

// benchLocalPing measures a ping of a trusted session, which the handler
// answers without the server, as caddymodule's own benchmark does.
func benchLocalPing() (testing.BenchmarkResult, error) {
	clk := newClock()
	sim := zuliptest.New(clk.Now)
	realm := sim.DefaultRealm()
	u := realm.AddUser("hamlet@zulip.example", "Hamlet", zuliptest.RoleMember)
	// Zulip shows date_joined for a row never written, which bounds
	// nothing: the user joined well before the first ping.
	clk.Advance(time.Hour)
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &caddymodule.Handler{CacheName: fmt.Sprintf("bench-ping-%d", time.Now().UnixNano())}
	if err := quietly(func() error { return h.Provision(ctx) }); err != nil {
		return testing.BenchmarkResult{}, err
	}
	defer h.Cleanup()
	h.SetClock(clk.Now)
	const body = "status=active&ping_only=true&new_user_input=false"
	r := httptest.NewRequest(http.MethodPost, "http://zulip.example"+apiPresencePath, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Authorization", realm.BasicAuth(u.ID))
	upstream := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		sim.ServeHTTP(w, r)
		return nil
	})
	// The first ping is forwarded and makes the session trusted; the
	// second may read the user's row; from then on pings are local.
	for range 2 {
		r.Body = io.NopCloser(strings.NewReader(body))
		if err := h.ServeHTTP(httptest.NewRecorder(), r, upstream); err != nil {
			return testing.BenchmarkResult{}, err
		}
	}
	var forwarded int
	countForward := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		forwarded++
		return nil
	})
	w := &nopWriter{header: http.Header{}}
	rb := &rewindBody{}
	res := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rb.Reset(body)
			r.Body = rb
			_ = h.ServeHTTP(w, r, countForward)
		}
	})
	if forwarded > 0 {
		return res, fmt.Errorf("%d pings within the window were forwarded", forwarded)
	}
	return res, nil
}

// rewindBody is a request body that can be reset without allocating, so
// that only the handler's allocations are counted.
type rewindBody struct{ strings.Reader }

func (*rewindBody) Close() error { return nil }

type nopWriter struct{ header http.Header }

func (w *nopWriter) Header() http.Header         { return w.header }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

// microRows returns n rows shaped like a realm's: ids spread out,
// timestamps of the last hour.
func microRows(n int) []presence.Row {
	rows := make([]presence.Row, n)
	for i := range rows {
		idle := int64(1793610000 + i*37%3600)
		rows[i] = presence.Row{UserID: int64(8 + i*3), Presence: presence.Presence{Active: idle - int64(i%200), Idle: idle}}
	}
	return rows
}

// microDelta is a 400-row delta: 300 users of the snapshot moved and 100
// newcomers, unsorted as Zulip's answers are.
func microDelta() []presence.Row {
	d := make([]presence.Row, 400)
	for i := range d {
		id := int64(8 + (i*7%1500)*3)
		if i%4 == 3 {
			id = int64(9 + i*3) // not in the snapshot
		}
		d[len(d)-1-i] = presence.Row{UserID: id, Presence: presence.Presence{Active: 1793613600 + int64(i), Idle: 1793613600 + int64(i)}}
	}
	return d
}

func benchMerge(b *testing.B) {
	base, delta := microRows(1500), microDelta()
	var s presence.Snapshot
	s.Replace(base)
	s.Merge(delta) // leave room for the newcomers, as in steady state
	for b.Loop() {
		b.StopTimer()
		s.Replace(base)
		b.StartTimer()
		s.Merge(delta)
	}
}

var microAnswer = presence.Answer{ServerTimestamp: 1793610000.5, LastUpdateID: 123456}

func benchRenderSlim(b *testing.B) {
	rows := microRows(1500)
	buf := presence.AppendModern(nil, rows, microAnswer)
	for b.Loop() {
		buf = presence.AppendModern(buf[:0], rows, microAnswer)
	}
}

func benchRenderLegacy(b *testing.B) {
	rows := microRows(1500)
	emails := make(map[int64]string, len(rows))
	for _, r := range rows {
		emails[r.UserID] = firstNames[r.UserID%int64(len(firstNames))] + "." + strconv.FormatInt(r.UserID, 10) + "@zulip.example"
	}
	email := func(id int64) string { return emails[id] }
	buf := presence.AppendLegacy(nil, rows, email, microAnswer)
	for b.Loop() {
		buf = presence.AppendLegacy(buf[:0], rows, email, microAnswer)
	}
}

// snapshotBytesPerRow measures the heap of 200 snapshots of 1 500 rows
// built as the handler builds them: a full fetch, then ten deltas.
func snapshotBytesPerRow() (float64, int) {
	base, delta := microRows(1500), microDelta()
	snaps := make([]*presence.Snapshot, 200)
	before := heapAlloc()
	rows := 0
	for i := range snaps {
		s := &presence.Snapshot{}
		s.Replace(base)
		for range 10 {
			s.Merge(delta)
		}
		snaps[i] = s
		rows += s.Len()
	}
	after := heapAlloc()
	runtime.KeepAlive(snaps)
	return float64(after-before) / float64(rows), rows / len(snaps)
}
