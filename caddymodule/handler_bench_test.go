package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// BenchmarkLocalPing measures a ping answered in process, from the request
// arriving to the answer written: the path every redundant tab ping takes.
func BenchmarkLocalPing(b *testing.B) {
	clk := newClock()
	sim := zuliptest.New(clk.Now)
	realm := sim.DefaultRealm()
	u := realm.AddUser("hamlet@zulip.example", "Hamlet", zuliptest.RoleMember)
	auth := realm.BasicAuth(u.ID)
	h := provision(b, Handler{CacheName: b.Name()})
	h.SetClock(clk.Now)
	next := simNext(sim)
	const body = "status=active&ping_only=true&new_user_input=false"
	req := func() *http.Request {
		r := httptest.NewRequest(http.MethodPost, "http://zulip.example"+apiPresencePath, strings.NewReader(body))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Authorization", auth)
		return r
	}
	// The first ping is forwarded and makes the session trusted; the
	// second reads the user's row, and from then on pings are local.
	for range 2 {
		if err := h.ServeHTTP(httptest.NewRecorder(), req(), next); err != nil {
			b.Fatal(err)
		}
	}
	forwarded := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		b.Fatal("a ping within the window was forwarded")
		return nil
	})
	r := req()
	w := &nopWriter{header: http.Header{}}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r.Body = nopBody{strings.NewReader(body)}
		if err := h.ServeHTTP(w, r, forwarded); err != nil {
			b.Fatal(err)
		}
	}
}

type nopWriter struct{ header http.Header }

func (w *nopWriter) Header() http.Header         { return w.header }
func (w *nopWriter) Write(p []byte) (int, error) { return len(p), nil }
func (w *nopWriter) WriteHeader(int)             {}

type nopBody struct{ *strings.Reader }

func (nopBody) Close() error { return nil }

// BenchmarkForwardedPoll measures what the handler adds to an incremental
// poll it forwards unchanged (the web app's), with an upstream that
// answers at once, so that only the handler's own work is timed.
func BenchmarkForwardedPoll(b *testing.B) {
	clk := newClock()
	sim := zuliptest.New(clk.Now)
	realm := sim.DefaultRealm()
	u := realm.AddUser("hamlet@zulip.example", "Hamlet", zuliptest.RoleMember)
	auth := realm.BasicAuth(u.ID)
	h := provision(b, Handler{CacheName: b.Name()})
	h.SetClock(clk.Now)
	const body = "status=active&ping_only=false&new_user_input=false&last_update_id=42"
	answer := []byte(`{"result":"success","msg":"","presences":{},"server_timestamp":1.5,"presence_last_update_id":42}` + "\n")
	upstream := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		_, _ = w.Write(answer)
		return nil
	})
	r := httptest.NewRequest(http.MethodPost, "http://zulip.example"+apiPresencePath, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Authorization", auth)
	w := &nopWriter{header: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		r.Body = nopBody{strings.NewReader(body)}
		if err := h.ServeHTTP(w, r, upstream); err != nil {
			b.Fatal(err)
		}
	}
}
