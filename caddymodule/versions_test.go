package caddymodule

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// releasedVersions are the Zulip versions operators run, and main.
var releasedVersions = []struct {
	name  string
	level int
}{
	{"9.x", zuliptest.FeatureLevelZulip9},
	{"10.x", zuliptest.FeatureLevelZulip10},
	{"11.x", zuliptest.FeatureLevelZulip11},
	{"main", zuliptest.FeatureLevelMain},
}

// versionTwin is a twin in mode whose servers model the Zulip of feature
// level, with one member an hour into the realm's life.
func versionTwin(t *testing.T, mode string, level int) (*twin, twinUser) {
	tw := newTwin(t, Handler{Mode: mode})
	tw.RunZulip(level)
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	tw.Clock.Advance(time.Hour)
	return tw, u
}

// TestPingsAnsweredOnEveryVersion: Zulip 10.0 and later send date_joined
// to the minute; the handler must still learn whose a browser session is
// (GET /users/me, once per session) and answer the no-op pings of its
// tabs locally, on every version, in both modes, and no client request
// may cost more than one upstream request on average.
func TestPingsAnsweredOnEveryVersion(t *testing.T) {
	for _, v := range releasedVersions {
		for _, mode := range []string{modeSession, modeShared} {
			t.Run(v.name+"/"+mode, func(t *testing.T) {
				tw, u := versionTwin(t, mode, v.level)
				// Three tabs of one browser session, each pinging once a
				// minute, 20 s apart.
				b := tw.browser("web", u)
				requests, local := 0, 0
				for range 30 {
					f := form("status", "idle", "ping_only", "true")
					if _, n := tw.post(b, f); n == 0 {
						local++
					}
					requests++
					tw.sameRows(u)
					tw.Clock.Advance(20 * time.Second)
				}
				got := tw.Proxied.DefaultRealm().Stats().Requests
				t.Logf("%d of %d pings answered locally; upstream %v", local, requests, got)
				if got["users_me"] > 1 {
					t.Errorf("GET /users/me asked %d times for one session", got["users_me"])
				}
				if local < requests/3 {
					t.Errorf("%d of %d no-op pings answered locally", local, requests)
				}
				var upstream int64
				for _, n := range got {
					upstream += n
				}
				if upstream > int64(requests) {
					t.Errorf("%d upstream requests for %d client requests (%v)", upstream, requests, got)
				}
			})
		}
	}
}

// TestServerMinFreqSetting: the handler configured with the server's
// PRESENCE_UPDATE_MIN_FREQ_SECONDS loses no write the server would store,
// and with 0 (every write stored) answers no ping locally.
func TestServerMinFreqSetting(t *testing.T) {
	for _, tc := range []struct {
		minFreq  time.Duration
		anyLocal bool
	}{{0, false}, {10 * time.Second, true}, {30 * time.Second, true}} {
		t.Run(tc.minFreq.String(), func(t *testing.T) {
			tw := newTwin(t, Handler{PresenceUpdateMinFreq: durationPtr(tc.minFreq)})
			st := zuliptest.DefaultServerSettings()
			st.PresenceUpdateMinFreq = tc.minFreq
			tw.SetServerSettings(st)
			u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
			tw.Clock.Advance(time.Hour)
			b := tw.browser("web", u)
			local := 0
			for i := range 60 {
				status := "active"
				if i%7 == 3 {
					status = "idle"
				}
				if _, n := tw.post(b, form("status", status, "ping_only", "true")); n == 0 {
					local++
				}
				tw.sameRows(u)
				tw.Clock.Advance(time.Duration(3+i%9) * time.Second)
			}
			t.Logf("%d of 60 pings answered locally", local)
			if (local > 0) != tc.anyLocal {
				t.Errorf("%d of 60 pings answered locally with min freq %v", local, tc.minFreq)
			}
		})
	}
}

// TestRowReadShapes: the one-user read answers the legacy shape through
// 11.x, the modern one from level 487, and from level 497 both in one
// object with a server_timestamp (#39112; zuliptest models 487, and the
// test makes 497 of it). The handler takes active_timestamp and
// idle_timestamp wherever they are: a modern or combined answer keeps the
// host on slim reads, and its pings are answered locally without a
// write lost.
func TestRowReadShapes(t *testing.T) {
	for _, tc := range []struct {
		name     string
		level    int
		combined bool
	}{{"legacy 11.x", zuliptest.FeatureLevelZulip11, false}, {"modern 487", zuliptest.FeatureLevelMain, false}, {"both 497", zuliptest.FeatureLevelMain, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var reads []string
			wrap := func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/presence") || strings.HasSuffix(r.URL.Path, "/me/presence") {
						next.ServeHTTP(w, r)
						return
					}
					reads = append(reads, r.URL.RawQuery)
					r.Header.Del("Accept-Encoding")
					rec := httptest.NewRecorder()
					next.ServeHTTP(rec, r)
					body := rec.Body.Bytes()
					if tc.combined && rec.Code == http.StatusOK {
						body = combinedShape(t, body)
					}
					for k, v := range rec.Header() {
						w.Header()[k] = v
					}
					w.Header().Del("Content-Length")
					w.WriteHeader(rec.Code)
					w.Write(body)
				})
			}
			tw := newTwin(t, Handler{})
			tw.RunZulip(tc.level)
			tw.wrapProxied = wrap
			u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
			tw.Clock.Advance(time.Hour)
			b := tw.browser("web", u)
			local := 0
			for range 30 {
				if _, n := tw.post(b, form("status", "idle", "ping_only", "true")); n == 0 {
					local++
				}
				tw.sameRows(u)
				tw.Clock.Advance(20 * time.Second)
			}
			t.Logf("%d of 30 pings local; row reads %q", local, reads)
			if local < 10 || len(reads) == 0 {
				t.Fatalf("%d of 30 pings answered locally, %d row reads", local, len(reads))
			}
			slim := tc.level >= zuliptest.FeatureLevelMain
			for _, q := range reads[1:] {
				if (q == "slim_presence=true") != slim {
					t.Errorf("a later read asked %q", q)
				}
			}
		})
	}
}

// combinedShape makes a level-487 answer to GET /users/{id}/presence the
// level-497 one: the legacy aggregated and website objects beside
// active_timestamp and idle_timestamp, and a server_timestamp.
func combinedShape(t *testing.T, body []byte) []byte {
	t.Helper()
	var ans struct {
		Result   string `json:"result"`
		Msg      string `json:"msg"`
		Presence struct {
			Active int64 `json:"active_timestamp"`
			Idle   int64 `json:"idle_timestamp"`
		} `json:"presence"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatalf("one-user read %s: %v", body, err)
	}
	p := ans.Presence
	legacy := map[string]any{"status": "active", "timestamp": p.Active}
	if p.Active+70 < p.Idle {
		legacy = map[string]any{"status": "idle", "timestamp": p.Idle}
	}
	out, _ := json.Marshal(map[string]any{
		"result": ans.Result, "msg": ans.Msg,
		"presence":         map[string]any{"aggregated": legacy, "website": legacy, "active_timestamp": p.Active, "idle_timestamp": p.Idle},
		"server_timestamp": float64(p.Idle) + 0.5,
	})
	return append(out, '\n')
}

// TestPingAnswersAsTheServerGivesThem: a local ping answer is Zulip's bare
// ping answer, so a ping is answered locally only where the server would
// give that: not where it lists a parameter as ignored
// (history_limit_days before 10.0, last_update_id too before 9.0), nor in
// a zephyr-mirror realm, whose every presence answer carries
// zephyr_mirror_active. Each answer is compared with the server's.
func TestPingAnswersAsTheServerGivesThem(t *testing.T) {
	pings := []url.Values{
		form("status", "active", "ping_only", "true", "history_limit_days", "14"),
		form("status", "active", "ping_only", "true", "history_limit_days", "14", "last_update_id", "-1"),
		form("status", "active", "ping_only", "true"),
	}
	for _, v := range []struct {
		name  string
		level int
	}{{"8.x", zuliptest.FeatureLevelZulip8}, {"9.x", zuliptest.FeatureLevelZulip9}, {"11.x", zuliptest.FeatureLevelZulip11}} {
		for _, mode := range []string{modeSession, modeShared} {
			t.Run(v.name+"/"+mode, func(t *testing.T) {
				tw, u := versionTwin(t, mode, v.level)
				c := tw.apiClient("phone", u)
				local := map[int]int{}
				for i := range 24 {
					if _, n := tw.post(c, pings[i%len(pings)]); n == 0 {
						local[i%len(pings)]++
					}
					tw.sameRows(u)
					tw.Clock.Advance(10 * time.Second)
				}
				t.Logf("local answers by kind of ping: %v", local)
				if local[2] == 0 {
					t.Errorf("no plain ping answered locally")
				}
				if v.level < zuliptest.FeatureLevelZulip10 && (local[0] != 0 || local[1] != 0) {
					t.Errorf("pings whose answer lists an ignored parameter answered locally: %v", local)
				}
			})
		}
	}
	t.Run("zephyr mirror", func(t *testing.T) {
		zephyr := func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, ok := presenceFamily(r); !ok {
					next.ServeHTTP(w, r)
					return
				}
				r.Header.Del("Accept-Encoding")
				rec := httptest.NewRecorder()
				next.ServeHTTP(rec, r)
				body := rec.Body.Bytes()
				if rec.Code == http.StatusOK {
					body = append(bytes.TrimSuffix(body, []byte("}\n")), []byte(`,"zephyr_mirror_active":false}`+"\n")...)
				}
				for k, vs := range rec.Header() {
					w.Header()[k] = vs
				}
				w.Header().Del("Content-Length")
				w.WriteHeader(rec.Code)
				w.Write(body)
			})
		}
		rig, users, phones, _ := extrasRealm(t, modeSession, zephyr)
		for i := range 12 {
			f := form("status", "active", "ping_only", "true")
			if i == 0 {
				f = form("status", "active", "slim_presence", "true")
			}
			if _, seen := rig.exchange(phones[0], f, ""); len(seen) == 0 {
				t.Fatalf("request %d answered without the server in a zephyr-mirror realm", i)
			}
			rig.sameRows(users[0])
			rig.Clock.Advance(10 * time.Second)
		}
	})
}

// TestEveryWriteStoredOnce: with PRESENCE_UPDATE_MIN_FREQ_SECONDS 0 Zulip
// stores every write, so the handler must send none twice: verification
// is off by default (a resent original would be stored again), and in
// shared mode a web app tab is not joined to the view (a join sends its
// write twice). Each upstream write after a client request's first
// reaches the proxied server a millisecond later, as a real one would, so
// that a second write shows: the servers' update ids and rows must stay
// equal.
func TestEveryWriteStoredOnce(t *testing.T) {
	for _, mode := range []string{modeSession, modeShared} {
		t.Run(mode, func(t *testing.T) {
			tw := newTwin(t, Handler{Mode: mode, PresenceUpdateMinFreq: durationPtr(0)})
			if r := tw.h.verifyRate(); r != 0 {
				t.Fatalf("verify_rate %v by default against a server that stores every write", r)
			}
			st := zuliptest.DefaultServerSettings()
			st.FeatureLevel, st.PresenceUpdateMinFreq = zuliptest.FeatureLevelMain, 0
			tw.SetServerSettings(st)
			var writes int
			var later time.Duration
			tw.wrapProxied = func(next http.Handler) http.Handler {
				return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if _, ok := presenceFamily(r); ok && r.Method == http.MethodPost {
						if writes++; writes > 1 {
							tw.Proxied.DefaultRealm().Advance(time.Millisecond)
							later += time.Millisecond
						}
					}
					next.ServeHTTP(w, r)
				})
			}
			send := func(c *client, f url.Values) answer {
				writes = 0
				d, _ := tw.post(c, f)
				tw.Direct.DefaultRealm().Advance(later)
				later = 0
				return d
			}
			hamlet := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
			othello := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
			tw.Clock.Advance(time.Hour)
			phone, tab := tw.apiClient("phone", hamlet), tw.browser("tab", othello)
			modern := func(cursor int64) url.Values {
				return form("status", "active", "last_update_id", strconv.FormatInt(cursor, 10))
			}
			send(phone, form("status", "active", "slim_presence", "true"))
			send(tab, modern(-1))
			for range 6 {
				tw.Clock.Advance(20 * time.Second)
				send(phone, form("status", "active", "slim_presence", "true"))
				// The tab's cursor comes from elsewhere (a page load's
				// /register), so the view cannot place it.
				tw.Both(func(r *zuliptest.Realm) { r.SetPresenceRow(othello.id, r.Now(), r.Now()) })
				send(tab, modern(tw.Direct.DefaultRealm().LastUpdateID()))
				tw.sameRows(hamlet, othello)
				if d, p := tw.Direct.DefaultRealm().LastUpdateID(), tw.Proxied.DefaultRealm().LastUpdateID(); d != p {
					t.Fatalf("update ids: direct %d, proxied %d: a write was sent twice", d, p)
				}
			}
		})
	}
}

// TestHistoryLimitAfterUpgrade: a Zulip 9.x lists history_limit_days as
// ignored and answers its default window; once upgraded it takes it. In
// shared mode every fetch made for a request that sent it carries it, so
// the answer tells afresh: no answer after the upgrade lists it.
func TestHistoryLimitAfterUpgrade(t *testing.T) {
	for _, mode := range []string{modeSession, modeShared} {
		t.Run(mode, func(t *testing.T) {
			tw, hamlet := versionTwin(t, mode, zuliptest.FeatureLevelZulip9)
			othello := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
			h, o := tw.apiClient("hamlet", hamlet), tw.apiClient("othello", othello)
			wide := form("status", "active", "slim_presence", "true", "history_limit_days", "30")
			slim := form("status", "active", "slim_presence", "true")
			for range 6 {
				tw.post(h, wide)
				tw.post(o, slim)
				tw.Clock.Advance(20 * time.Second)
			}
			tw.RunZulip(zuliptest.FeatureLevelZulip11)
			for range 6 {
				d, _ := tw.post(h, wide) // fails on a stale ignored list
				if strings.Contains(string(d.body), "ignored_parameters_unsupported") {
					t.Fatalf("11.x listed history_limit_days: %s", d.body)
				}
				tw.post(o, slim)
				tw.Clock.Advance(20 * time.Second)
			}
		})
	}
}
