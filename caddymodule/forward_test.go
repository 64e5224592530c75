package caddymodule

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
	"github.com/zulip-presence/caddy-zulip-presence/internal/twinrig"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest/simclock"
)

// cutShort is a 200 whose body a broken proxy cut after its first bytes.
const cutShort = `{"result":"success","msg":"","presences":{"1":{"active_timest`

func TestZulipOutcomeNeedsACompleteBody(t *testing.T) {
	hdr := http.Header{"Content-Type": {"application/json"}}
	for _, tc := range []struct {
		body string
		want cache.Verdict
	}{
		{`{"result":"success","msg":""}` + "\n", cache.VerdictOK},
		{`{"result":"success","msg":"","presences":{},"server_timestamp":1.5,"presence_last_update_id":-1}`, cache.VerdictOK},
		{cutShort, cache.VerdictFailed},
		{`{"result":"success","msg":""`, cache.VerdictFailed},
		{`{"result":"success","msg":""}}`, cache.VerdictFailed},
	} {
		if got := zulipVerdict(http.StatusOK, hdr, []byte(tc.body), nil); got != tc.want {
			t.Errorf("zulipVerdict(200, %q) = %v, want %v", tc.body, got, tc.want)
		}
	}
}

// TestCutShortSuccessTrustsNothing: a ping whose 200 came cut short does
// not make the session trusted, so the next ping still reaches the server;
// with the same answer complete, the next ping is answered locally.
func TestCutShortSuccessTrustsNothing(t *testing.T) {
	for _, cut := range []bool{false, true} {
		clk := simclock.New(twinrig.Start)
		sim := zuliptest.New(clk.Now)
		realm := sim.DefaultRealm()
		u := realm.AddUser("hamlet@zulip.example", "Hamlet", zuliptest.RoleMember)
		clk.Advance(time.Hour)
		h := provision(t, Handler{CacheName: t.Name() + strconv.FormatBool(cut)})
		h.SetClock(clk.Now)
		first := true
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			rec := httptest.NewRecorder()
			sim.ServeHTTP(rec, r)
			copyHeader(w.Header(), rec.Header())
			body := rec.Body.String()
			if first && cut && r.URL.Path == apiPresencePath {
				body = cutShort
				w.Header().Del("Content-Length")
			}
			first = first && r.URL.Path != apiPresencePath
			w.WriteHeader(rec.Code)
			_, err := w.Write([]byte(body))
			return err
		})
		for range 2 {
			r := httptest.NewRequest(http.MethodPost, "http://zulip.example"+apiPresencePath, strings.NewReader("status=idle&ping_only=true"))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r.Header.Set("Authorization", realm.BasicAuth(u.ID))
			if err := h.ServeHTTP(httptest.NewRecorder(), r, next); err != nil {
				t.Fatal(err)
			}
			clk.Advance(10 * time.Second)
		}
		pings := realm.Stats().Requests["presence"]
		if cut && pings != 2 {
			t.Errorf("after a cut-short success, %d of 2 pings reached the server: the session was trusted", pings)
		}
		if !cut && pings != 1 {
			t.Errorf("after a complete success, %d of 2 pings reached the server, want 1", pings)
		}
	}
}
