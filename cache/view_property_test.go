package cache

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// TestViewProperty drives a simulated realm with random writes while
// fetches at the view's cursor, and full fetches, are started, answered
// and merged out of order (as parallel requests of one host are), and web app tabs' polls
// from older cursors are merged as forwarded answers; users turn invisible
// mode on and off, which rewrites their rows, and now and then the realm
// falls quiet for longer than the presence window. Most seeds' servers
// skip update ids (zuliptest's IDGapRate, drawn per seed), as racing first
// writes and bots' hidden writes make Zulip's. After every merge
// the view must hold the server's table as of its cursor, and every
// cursor it answers must get exactly the rows and id the server would
// have given a tab polling from it at that instant.
//
// ZP_VIEW_SEEDS sets the number of seeds (default 60).
func TestViewProperty(t *testing.T) {
	seeds := uint64(60)
	if s := os.Getenv("ZP_VIEW_SEEDS"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || n == 0 {
			t.Fatalf("ZP_VIEW_SEEDS=%q", s)
		}
		seeds = n
	}
	served := 0
	for seed := uint64(1); seed <= seeds; seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { served += runViewProperty(t, seed) })
	}
	// The check must have had tabs to check.
	if served < int(seeds)*80 {
		t.Fatalf("only %d cursors answered over %d seeds of 300 steps", served, seeds)
	}
	t.Logf("%d cursors answered and checked", served)
}

type viewRig struct {
	t     *testing.T
	now   time.Time
	srv   *zuliptest.Server
	realm *zuliptest.Realm
	users []zuliptest.User
	// invisible tells which users turned presence off.
	invisible map[int64]bool
}

// post sends a presence request of user with form, and returns the
// answer's body.
func (rig *viewRig) post(user zuliptest.User, form url.Values) []byte {
	rig.t.Helper()
	r := httptest.NewRequest(http.MethodPost, "http://zulip.example/api/v1/users/me/presence", bytes.NewReader([]byte(form.Encode())))
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Authorization", rig.realm.BasicAuth(user.ID))
	w := httptest.NewRecorder()
	rig.srv.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		rig.t.Fatalf("presence answer %d: %s", w.Code, w.Body)
	}
	return w.Body.Bytes()
}

func (rig *viewRig) fetch(user zuliptest.User, status string, cursor int64) presence.Decoded {
	form := url.Values{"status": {status}, "slim_presence": {"true"}, "last_update_id": {strconv.FormatInt(cursor, 10)}}
	if cursor < 0 {
		form.Set("history_limit_days", "14")
	}
	body := rig.post(user, form)
	ans, err := presence.DecodeModern(body)
	if err != nil {
		rig.t.Fatalf("decode %s: %v", body, err)
	}
	return ans
}

// asOf is the server's answer, as of update id id, to a poll from cursor
// (a full fetch when negative).
func (rig *viewRig) asOf(id, cursor int64) presence.Decoded {
	rig.t.Helper()
	req := zuliptest.AsOfRequest{Slim: true}
	if cursor >= 0 {
		req.LastUpdateID = &cursor
	}
	body, err := rig.realm.RenderAsOf(rig.users[0].ID, id, rig.now, req)
	if err != nil {
		rig.t.Fatalf("render as of %d: %v", id, err)
	}
	ans, err := presence.DecodeModern(body)
	if err != nil {
		rig.t.Fatalf("decode %s: %v", body, err)
	}
	return ans
}

// viewGapRates are the IDGapRates TestViewProperty draws from: none, rare
// as racing first writes, and as frequent as bots' writes may be.
var viewGapRates = []float64{0, 0.01, 0.05, 0.2, 0.5}

type pendingFetch struct {
	cursor   int64
	answered bool
	ans      presence.Decoded
}

func runViewProperty(t *testing.T, seed uint64) (served int) {
	rng := rand.New(rand.NewPCG(seed, 7))
	rig := &viewRig{t: t, now: time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC), invisible: map[int64]bool{}}
	rig.srv = zuliptest.New(func() time.Time { return rig.now })
	rig.realm = rig.srv.DefaultRealm()
	// The gap rate comes from a stream of its own, so that the steps of a
	// seed are the same at every rate.
	st := rig.srv.ServerSettings()
	st.IDGapRate = viewGapRates[rand.New(rand.NewPCG(seed, 0x67617073)).IntN(len(viewGapRates))]
	rig.srv.SetServerSettings(st)
	rig.realm.SetHistoryLimits(zuliptest.HistoryLimits{Span: 10000 * time.Hour})
	for i := range 12 {
		rig.users = append(rig.users, rig.realm.AddUser(fmt.Sprintf("u%d@zulip.example", i), fmt.Sprintf("U%d", i), zuliptest.RoleMember))
	}
	statuses := []string{"active", "idle"}
	user := func() zuliptest.User { return rig.users[rng.IntN(len(rig.users))] }
	v := &View{}
	v.Apply(-1, 14, rig.fetch(user(), "active", -1), rig.now)
	var pending []*pendingFetch
	rewrites := map[int64]time.Time{}
	for step := range 300 {
		next := rig.now.Add(time.Duration(rng.IntN(40)) * time.Second)
		if rng.IntN(150) == 0 {
			next = next.Add(15 * 24 * time.Hour) // every row leaves the window
		}
		for id, at := range rewrites {
			if at.After(next) {
				continue
			}
			if !at.Before(rig.now) && !rig.invisible[id] {
				rig.now = at
				rig.realm.SetPresenceEnabled(id, false)
				rig.invisible[id] = true
			}
			delete(rewrites, id)
		}
		if next.After(rig.now) {
			rig.now = next
		}
		switch op := rng.IntN(11); {
		case op < 3: // a write that reaches the server elsewhere
			rig.post(user(), url.Values{"status": {statuses[rng.IntN(2)]}, "ping_only": {"true"}})
			continue
		case op == 10: // invisible mode, which rewrites rows with new ids
			u := user()
			on := rig.invisible[u.ID]
			if !on && rng.IntN(2) == 0 {
				// Invisible mode turned on 264.5 s after a write
				// backdates the row to within the same second: a new
				// id, the values it had. The view merges in between.
				rig.now = rig.now.Truncate(time.Second).Add(1700 * time.Millisecond)
				rig.post(u, url.Values{"status": {"active"}, "ping_only": {"true"}})
				rewrites[u.ID] = rig.now.Add(264500 * time.Millisecond)
				continue
			}
			rig.realm.SetPresenceEnabled(u.ID, on)
			rig.invisible[u.ID] = !on
			continue
		case op < 5: // a fetch starts from the view's cursor, or a full one
			c, ok := v.Cursor(rig.now, 14, time.Hour)
			if !ok || rng.IntN(8) == 0 {
				c = -1
			}
			pending = append(pending, &pendingFetch{cursor: c})
			continue
		case op < 7: // the server answers a fetch in flight
			for _, f := range pending {
				if !f.answered {
					f.ans, f.answered = rig.fetch(user(), statuses[rng.IntN(2)], f.cursor), true
					break
				}
			}
			continue
		case op < 9: // an answered fetch is merged, in any order
			i := rng.IntN(len(pending) + 1)
			if i == len(pending) || !pending[i].answered {
				continue
			}
			f := pending[i]
			pending = slices.Delete(pending, i, i+1)
			v.Apply(f.cursor, 14, f.ans, rig.now)
		default: // a tab polls from a cursor near the view's, as it came
			cursor := max(1, v.cursor-int64(rng.IntN(30)))
			ans := rig.fetch(user(), statuses[rng.IntN(2)], cursor)
			v.ApplyPoll(cursor, 14, ans, rig.now)
		}
		served += checkView(t, rig, v, step)
	}
	return served
}

// checkView checks the view against the server as of its cursor, and
// returns how many of the cursors up to 40 below it it answered.
func checkView(t *testing.T, rig *viewRig, v *View, step int) (served int) {
	t.Helper()
	cursor, ok := v.Cursor(rig.now, 14, time.Hour)
	if !ok || cursor < 0 {
		return 0 // no row in the window when it was fetched
	}
	want := rig.asOf(cursor, -1)
	full, ok := v.Serve(nil, rig.now, 14, time.Hour)
	if !ok {
		t.Fatalf("step %d: a synced view at %d does not serve", step, cursor)
	}
	cutoff := rig.now.Add(-14 * 24 * time.Hour).Unix() // the renderer's window
	inWindow := full.Rows[:0]
	for _, r := range full.Rows {
		if r.Idle > cutoff {
			inWindow = append(inWindow, r)
		}
	}
	if err := sameRows(inWindow, want.Rows); err != nil {
		t.Fatalf("step %d: view at %d: %v", step, cursor, err)
	}
	for b := max(1, cursor-40); b <= cursor+1; b++ {
		got, ok := v.ServeSince(nil, b, rig.now, time.Hour)
		if v.Decides(b) != ok {
			t.Fatalf("step %d: view at %d, tab at %d: Decides %v, ServeSince %v", step, cursor, b, !ok, ok)
		}
		if !ok {
			continue
		}
		want := rig.asOf(cursor, b)
		if err := sameRows(got.Rows, want.Rows); err != nil {
			t.Fatalf("step %d: view at %d, tab at %d: %v", step, cursor, b, err)
		}
		if got.Cursor != want.LastUpdateID {
			t.Fatalf("step %d: view at %d, tab at %d: id %d, server %d", step, cursor, b, got.Cursor, want.LastUpdateID)
		}
		served++
	}
	return served
}

func sameRows(got, want []presence.Row) error {
	g := map[int64]presence.Presence{}
	for _, r := range got {
		g[r.UserID] = r.Presence
	}
	if len(g) != len(want) {
		return fmt.Errorf("rows %v, server %v", got, want)
	}
	for _, r := range want {
		if p, ok := g[r.UserID]; !ok || p != r.Presence {
			return fmt.Errorf("rows %v, server %v", got, want)
		}
	}
	return nil
}
