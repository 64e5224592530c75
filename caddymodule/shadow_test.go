package caddymodule

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// verifyCounts reads verify_total for the kinds a workload sends.
func verifyCounts() map[string]float64 {
	out := map[string]float64{}
	m, _ := registerMetrics(nil)
	for _, kind := range []string{"ping", "modern", "slim", "legacy"} {
		for _, result := range []string{verifyMatch, verifyMismatch, verifySkipped} {
			out[result] += testutil.ToFloat64(m.verify.WithLabelValues(kind, result))
		}
	}
	return out
}

func countsSince(before map[string]float64) map[string]float64 {
	after := verifyCounts()
	for k := range after {
		after[k] -= before[k]
	}
	return after
}

// comparisonWorkload drives tabs of a browser session, a mobile app's
// slim polls and a script's legacy polls, each request through step, and
// checks that the servers' rows stay alike.
func comparisonWorkload(t *testing.T, tw *twin, minutes int, step func(c *client, f url.Values)) {
	t.Helper()
	hamlet := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	iago := tw.addUser("iago@zulip.example", zuliptest.RoleMember)
	othello := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	web := tw.browser("web", hamlet)
	app := tw.apiClient("app", iago)
	script := tw.apiClient("script", othello)
	for minute := range minutes {
		status := "active"
		if minute%5 == 3 {
			status = "idle"
		}
		for tab := range 3 {
			step(web, form("status", status, "ping_only", "true"))
			if tab == 0 {
				step(app, form("status", status, "slim_presence", "true"))
			}
			tw.Clock.Advance(20 * time.Second)
		}
		step(script, form("status", "active"))
		tw.sameRows(hamlet, iago, othello)
	}
}

// shadowWorkload is comparisonWorkload in shadow mode: every answer must
// be the server's own, byte for byte.
func shadowWorkload(t *testing.T, tw *twin, minutes int) {
	t.Helper()
	comparisonWorkload(t, tw, minutes, func(c *client, f url.Values) {
		t.Helper()
		d := tw.serveDirect(c.request(false, f))
		p, _ := tw.serveProxied(c.request(true, f))
		if d.status != p.status || !bytes.Equal(d.body, p.body) {
			t.Fatalf("%s %s: shadow mode answered\n%d %s\nwhere the server answered\n%d %s", c.name, f.Encode(), p.status, p.body, d.status, d.body)
		}
	})
}

// verifyWorkload is comparisonWorkload with verify_rate on: answers are
// checked under the contract when checked is true (a handler broken on
// purpose answers wrongly), and each verification is let finish before
// the clock moves, as it would within milliseconds.
func verifyWorkload(t *testing.T, tw *twin, minutes int, checked bool) {
	t.Helper()
	comparisonWorkload(t, tw, minutes, func(c *client, f url.Values) {
		t.Helper()
		if checked {
			tw.post(c, f)
		} else {
			tw.serveDirect(c.request(false, f))
			tw.serveProxied(c.request(true, f))
		}
		tw.h.WaitVerifications()
	})
}

// TestComparisonsOfAHealthyHandler: in shadow mode every client gets the
// server's own answer, and with verify_rate 1 every answer the handler
// gave itself is checked after the fact; either way a healthy handler
// finds no mismatch, and the rows stay those of a direct run.
func TestComparisonsOfAHealthyHandler(t *testing.T) {
	one := 1.0
	for _, mode := range []string{modeSession, modeShared} {
		for _, shadow := range []bool{true, false} {
			cfg, name := Handler{Mode: mode, VerifyRate: &one}, mode+"/verify"
			if shadow {
				cfg, name = Handler{Mode: mode, Shadow: true}, mode+"/shadow"
			}
			t.Run(name, func(t *testing.T) {
				tw := newTwin(t, cfg)
				before := verifyCounts()
				if shadow {
					shadowWorkload(t, tw, 15)
				} else {
					verifyWorkload(t, tw, 15, true)
				}
				got := countsSince(before)
				t.Logf("verify_total: %v", got)
				if got[verifyMismatch] != 0 {
					t.Errorf("%v mismatches: %v", got[verifyMismatch], recentMismatches())
				}
				if got[verifyMatch] < 20 {
					t.Errorf("only %v comparisons matched", got[verifyMatch])
				}
			})
		}
	}
}

// TestShadowModeFindsWrongSettings: a handler told Zulip's defaults in
// front of a server whose settings.py changed them would lose writes (a
// lower PRESENCE_UPDATE_MIN_FREQ_SECONDS) or render wrong legacy statuses
// (another PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS): shadow mode
// counts and lists the mismatches, while every client still gets the
// server's answer (shadowWorkload checks each) and no write is lost.
func TestShadowModeFindsWrongSettings(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(*zuliptest.ServerSettings)
		kind   string
	}{
		{"min freq 10s", func(st *zuliptest.ServerSettings) { st.PresenceUpdateMinFreq = 10 * time.Second }, "ping"},
		{"legacy offset 30s", func(st *zuliptest.ServerSettings) { st.PresenceLegacyEventOffset = 30 * time.Second }, "legacy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw := newTwin(t, Handler{Shadow: true})
			st := zuliptest.DefaultServerSettings()
			tc.change(&st)
			tw.SetServerSettings(st)
			before := verifyCounts()
			shadowWorkload(t, tw, 10)
			got := countsSince(before)
			t.Logf("verify_total: %v", got)
			if got[verifyMismatch] == 0 {
				t.Fatal("shadow mode found no mismatch")
			}
			last := recentMismatches()
			if len(last) == 0 || last[len(last)-1].Kind != tc.kind || len(last[len(last)-1].Differences) == 0 {
				t.Fatalf("mismatch log %+v", last)
			}
		})
	}
}

// TestVerifyFindsAWrongMinFreq: verification finds the pings a handler
// told the wrong PRESENCE_UPDATE_MIN_FREQ_SECONDS answers locally while
// the server stores them, and its resend stores what the handler lost.
func TestVerifyFindsAWrongMinFreq(t *testing.T) {
	one := 1.0
	tw := newTwin(t, Handler{VerifyRate: &one})
	st := zuliptest.DefaultServerSettings()
	st.PresenceUpdateMinFreq = 10 * time.Second
	tw.SetServerSettings(st)
	before := verifyCounts()
	verifyWorkload(t, tw, 10, true)
	got := countsSince(before)
	t.Logf("verify_total: %v", got)
	if got[verifyMismatch] == 0 {
		t.Fatal("verification found no mismatch with a wrong min freq")
	}
}

// TestComparisonsFindABrokenHandler: with the handler broken on purpose
// (a row left out of full tables, a view that stops merging), shadow mode
// and verify_rate 1 count and log mismatches, and in shadow mode every
// client still gets the server's answer.
func TestComparisonsFindABrokenHandler(t *testing.T) {
	one := 1.0
	for _, tc := range []struct {
		name  string
		fault *atomic.Bool
		mode  string
	}{
		{"dropped row", &testFaults.dropRow, modeSession},
		{"dropped row", &testFaults.dropRow, modeShared},
		{"stale view", &testFaults.staleView, modeShared},
	} {
		for _, shadow := range []bool{true, false} {
			name := tc.name + "/" + tc.mode + "/verify"
			cfg := Handler{Mode: tc.mode, VerifyRate: &one}
			if shadow {
				name, cfg = tc.name+"/"+tc.mode+"/shadow", Handler{Mode: tc.mode, Shadow: true}
			}
			t.Run(name, func(t *testing.T) {
				tw := newTwin(t, cfg)
				tc.fault.Store(true)
				defer tc.fault.Store(false)
				before := verifyCounts()
				if shadow {
					shadowWorkload(t, tw, 6)
				} else {
					verifyWorkload(t, tw, 6, false)
				}
				got := countsSince(before)
				t.Logf("verify_total: %v", got)
				if got[verifyMismatch] == 0 {
					t.Fatalf("no mismatch found with the fault on")
				}
			})
		}
	}
}

// TestVerifyFindsAnotherLanguage: a local ping repeats the headers of the
// server's last answer to the session; verification compares its
// Content-Language with the server's answer to the resent original, so a
// server whose answers to the same request changed language is reported.
func TestVerifyFindsAnotherLanguage(t *testing.T) {
	one := 1.0
	tw := newTwin(t, Handler{VerifyRate: &one})
	relabel := false
	tw.wrapProxied = func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			next.ServeHTTP(&languageWriter{ResponseWriter: w, relabel: relabel}, r)
		})
	}
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	c := tw.apiClient("phone", u)
	ping := form("status", "active", "ping_only", "true")
	for range 3 {
		tw.serveProxied(c.request(true, ping))
		tw.Clock.Advance(10 * time.Second)
	}
	before := verifyCounts()
	relabel = true
	local := 0
	for range 3 {
		if _, n := tw.serveProxied(c.request(true, ping)); n == 1 {
			local++ // the resent original is the one upstream request
		}
		tw.Clock.Advance(10 * time.Second)
	}
	got := countsSince(before)
	t.Logf("verify_total: %v; %d local", got, local)
	if got[verifyMismatch] == 0 {
		t.Fatal("verification found no mismatch")
	}
	last := recentMismatches()
	if d := last[len(last)-1].Differences; len(d) == 0 || !strings.Contains(d[0], "Content-Language") || !strings.Contains(d[0], "xx") {
		t.Fatalf("mismatch %+v", last[len(last)-1])
	}
}

// languageWriter gives an answer another Content-Language, once relabel.
type languageWriter struct {
	http.ResponseWriter
	relabel bool
}

func (w *languageWriter) WriteHeader(code int) {
	if w.relabel {
		w.Header().Set("Content-Language", "xx")
	}
	w.ResponseWriter.WriteHeader(code)
}
