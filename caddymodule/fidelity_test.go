package caddymodule

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// schedule is a simulated hour: actions keyed by the second they run at.
type schedule map[int][]func()

func (s schedule) at(sec int, f func()) { s[sec] = append(s[sec], f) }

func (s schedule) run(tw *twin, seconds int) {
	for sec := 0; sec < seconds; sec++ {
		for _, f := range s[sec] {
			f()
		}
		tw.Clock.Advance(time.Second)
	}
}

// cursorOf reads presence_last_update_id from an answer.
func cursorOf(t *testing.T, a answer) int64 {
	t.Helper()
	id, ok := cursorIn(a.body)
	if !ok {
		t.Fatalf("no presence_last_update_id in %s", a.body)
	}
	return id
}

// cursorIn reads presence_last_update_id from an answer's body, if it
// has one.
func cursorIn(body []byte) (int64, bool) {
	var v struct {
		ID *int64 `json:"presence_last_update_id"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.ID == nil {
		return 0, false
	}
	return *v.ID, true
}

// TestFidelityOverAnHour drives every client type of design §1 for a
// simulated hour, with other users coming and going, and checks that every
// answer through the module equals the direct one (design §6) and that the
// server ends up with the same rows and the same number of row writes.
func TestFidelityOverAnHour(t *testing.T) {
	tw := newTwin(t, Handler{})
	rng := rand.New(rand.NewPCG(7, 7))
	sched := schedule{}
	const hour = 3600

	// Others: some with history (a few days, or beyond the 14-day window),
	// each online for a stretch of the hour, pinging straight to both servers.
	var everyone []twinUser
	for i := range 30 {
		u := tw.addUser(fmt.Sprintf("other%d@zulip.example", i), zuliptest.RoleMember)
		everyone = append(everyone, u)
		if i%3 == 0 {
			age := time.Duration(rng.IntN(20*24)) * time.Hour
			connected := tw.Clock.Now().Add(-age)
			tw.Both(func(r *zuliptest.Realm) { r.SetPresenceRow(u.id, connected, connected.Add(-time.Hour)) })
		}
		start, length := rng.IntN(hour), 120+rng.IntN(1800)
		c := tw.apiClient(u.email, u)
		for sec := start + rng.IntN(60); sec < min(start+length, hour); sec += 60 {
			status := []string{"active", "idle"}[rng.IntN(4)/3]
			sched.at(sec, func() {
				f := form("status", status, "ping_only", "true")
				tw.serveDirect(c.request(false, f))
				tw.Proxied.ServeHTTP(discard{}, c.request(true, f))
			})
		}
	}

	// A browser: three tabs on one session, polling incrementally out of
	// phase, with a ping_only whenever a tab regains focus.
	bu := tw.addUser("browser@zulip.example", zuliptest.RoleMember)
	browser := tw.browser("web", bu)
	for tab := range 3 {
		cursor := int64(-1)
		for sec := tab * 20; sec < hour; sec += 60 {
			sched.at(sec, func() {
				f := form("status", "active", "ping_only", "false", "new_user_input", strconv.FormatBool(sec%180 == 0), "last_update_id", strconv.FormatInt(cursor, 10))
				a, _ := tw.post(browser, f)
				cursor = cursorOf(t, a)
			})
		}
		for sec := 31 + tab*11; sec < hour; sec += 420 {
			sched.at(sec, func() { tw.post(browser, form("status", "active", "ping_only", "true", "new_user_input", "true")) })
		}
	}

	// zulip-flutter: a slim full poll every minute; ping_only on lifecycle
	// changes; idle for a quarter of an hour in the middle.
	fu := tw.addUser("flutter@zulip.example", zuliptest.RoleMember)
	flutter := tw.apiClient("zulip-flutter", fu)
	for sec := 5; sec < hour; sec += 60 {
		status := "active"
		if sec > 1200 && sec < 2100 {
			status = "idle"
		}
		sched.at(sec, func() {
			tw.post(flutter, form("status", status, "ping_only", "false", "new_user_input", "false", "slim_presence", "true"))
		})
	}
	for _, sec := range []int{300, 301, 2101, 2400} {
		sched.at(sec, func() { tw.post(flutter, form("status", "active", "ping_only", "true", "new_user_input", "true")) })
	}

	// zulip-mobile: the legacy poll, status and new_user_input only.
	mu := tw.addUser("mobile@zulip.example", zuliptest.RoleMember)
	mobile := tw.apiClient("zulip-mobile", mu)
	for sec := 13; sec < hour; sec += 60 {
		sched.at(sec, func() { tw.post(mobile, form("status", "active", "new_user_input", "false")) })
	}

	// zulip-terminal: legacy polls, idle when the user typed nothing.
	tu := tw.addUser("terminal@zulip.example", zuliptest.RoleMember)
	terminal := tw.apiClient("zulip-terminal", tu)
	for sec := 29; sec < hour; sec += 60 {
		input := (sec/60)%4 != 0
		status := map[bool]string{true: "active", false: "idle"}[input]
		sched.at(sec, func() { tw.post(terminal, form("status", status, "new_user_input", strconv.FormatBool(input))) })
	}

	// A zulip-js script: multipart/form-data, slim, with a wider window.
	su := tw.addUser("script@zulip.example", zuliptest.RoleMember)
	script := tw.apiClient("script", su)
	script.multipart = true
	for sec := 47; sec < hour; sec += 60 {
		sched.at(sec, func() {
			tw.post(script, form("status", "active", "slim_presence", "true", "history_limit_days", "30"))
		})
	}

	sched.run(tw, hour)

	everyone = append(everyone, bu, fu, mu, tu, su)
	tw.sameRows(everyone...)
	d, p := tw.Direct.DefaultRealm().Stats(), tw.Proxied.DefaultRealm().Stats()
	if d.RowsWritten != p.RowsWritten {
		t.Fatalf("rows written: %d through the module, %d direct", p.RowsWritten, d.RowsWritten)
	}
	if p.ResponseBytes >= d.ResponseBytes {
		t.Fatalf("upstream bytes: %d through the module, not fewer than %d direct", p.ResponseBytes, d.ResponseBytes)
	}
	t.Logf("upstream bytes %d → %d (%.2f), rows returned %d → %d, requests %v → %v",
		d.ResponseBytes, p.ResponseBytes, float64(p.ResponseBytes)/float64(d.ResponseBytes),
		d.RowsReturned, p.RowsReturned, d.Requests, p.Requests)
}

// discard is a ResponseWriter that drops everything.
type discard struct{}

func (discard) Header() http.Header         { return http.Header{} }
func (discard) Write(p []byte) (int, error) { return len(p), nil }
func (discard) WriteHeader(int)             {}
