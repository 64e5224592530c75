package zuliptest

import (
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// mainSettings are the defaults on a Zulip main with the slim one-user
// read.
func mainSettings() ServerSettings {
	st := DefaultServerSettings()
	st.FeatureLevel = FeatureLevelMain
	return st
}

// withSettings is newEnv with the defaults changed by f.
func withSettings(t *testing.T, f func(*ServerSettings)) *env {
	e := newEnv(t)
	st := DefaultServerSettings()
	f(&st)
	e.srv.SetServerSettings(st)
	return e
}

func ignoredOf(t *testing.T, r resp) []string {
	t.Helper()
	var out []string
	if l, ok := r.mustJSON(t)["ignored_parameters_unsupported"].([]any); ok {
		for _, v := range l {
			out = append(out, v.(string))
		}
	}
	return out
}

func TestDefaultServerSettings(t *testing.T) {
	st := DefaultServerSettings()
	want := ServerSettings{FeatureLevel: 421, PresenceUpdateMinFreq: 55 * time.Second, PresenceLegacyEventOffset: 70 * time.Second, OfflineThreshold: 200 * time.Second}
	if st != want {
		t.Fatalf("defaults %+v, want %+v", st, want)
	}
	if got := New(nil).ServerSettings(); got != want {
		t.Fatalf("New starts with %+v", got)
	}
	if !(FeatureLevelZulip8 < flLastUpdateID && flLastUpdateID <= FeatureLevelZulip9 &&
		FeatureLevelZulip9 < flHistoryLimitDays && flHistoryLimitDays <= FeatureLevelZulip10 &&
		FeatureLevelZulip9 < flDateJoinedMinutes && flDateJoinedMinutes <= FeatureLevelZulip10 &&
		FeatureLevelZulip11 < flUserPresenceModern && flUserPresenceModern <= FeatureLevelMain) {
		t.Fatal("feature levels out of order")
	}
}

func TestMinFreqZeroStoresEveryWrite(t *testing.T) {
	e := withSettings(t, func(st *ServerSettings) { st.PresenceUpdateMinFreq = 0 })
	c := e.newCast()
	for i := range 5 {
		e.post(c.hamlet, "status=active&ping_only=true")
		if got := e.rm.LastUpdateID(); got != int64(i+1) {
			t.Fatalf("after ping %d: last update ID %d", i+1, got)
		}
		e.clock.Advance(time.Second)
	}
	if row := e.rm.PresenceRow(c.hamlet.ID); !row.LastActive.Equal(dbTime(e.clock.Now().Add(-time.Second))) {
		t.Fatalf("row %+v not moved by the last ping", row)
	}
	// Only a write at the very same instant is not newer.
	e.post(c.hamlet, "status=active&ping_only=true")
	e.post(c.hamlet, "status=active&ping_only=true")
	if got := e.rm.LastUpdateID(); got != 6 {
		t.Fatalf("two writes at one instant: last update ID %d, want 6", got)
	}
}

func TestMinFreqTenSeconds(t *testing.T) {
	for _, tc := range []struct {
		minFreq time.Duration
		stored  bool
	}{{55 * time.Second, false}, {10 * time.Second, true}} {
		e := withSettings(t, func(st *ServerSettings) { st.PresenceUpdateMinFreq = tc.minFreq })
		c := e.newCast()
		e.post(c.hamlet, "status=active&ping_only=true")
		e.clock.Advance(30 * time.Second)
		e.post(c.hamlet, "status=active&ping_only=true")
		if got := e.rm.LastUpdateID() == 2; got != tc.stored {
			t.Errorf("min freq %v: write 30 s later stored %v, want %v", tc.minFreq, got, tc.stored)
		}
		// Exactly the min freq later is not enough (strict >).
		e.clock.Advance(tc.minFreq)
		before := e.rm.LastUpdateID()
		e.post(c.hamlet, "status=active&ping_only=true")
		if tc.stored && e.rm.LastUpdateID() != before {
			t.Errorf("min freq %v: a write exactly min freq later was stored", tc.minFreq)
		}
	}
}

func TestLegacyOffsetSetting(t *testing.T) {
	for _, tc := range []struct {
		offset time.Duration
		want   string
	}{{70 * time.Second, "active"}, {30 * time.Second, "idle"}} {
		e := withSettings(t, func(st *ServerSettings) { st.PresenceLegacyEventOffset = tc.offset })
		c := e.newCast()
		now := dbTime(e.clock.Now())
		e.rm.SetPresenceRow(c.hamlet.ID, now, now.Add(-50*time.Second))
		p := e.post(c.othello, "status=idle").presences(t)[c.hamlet.Email].(map[string]any)
		if got := p["aggregated"].(map[string]any)["status"]; got != tc.want {
			t.Errorf("offset %v, active 50 s before connected: %v, want %s", tc.offset, got, tc.want)
		}
		one := e.get(c.othello, "users/"+id(c.hamlet)+"/presence").mustJSON(t)["presence"].(map[string]any)
		if got := one["website"].(map[string]any)["status"]; got != tc.want {
			t.Errorf("offset %v: one-user read says %v, want %s", tc.offset, got, tc.want)
		}
	}
}

func TestOfflineThresholdSetting(t *testing.T) {
	for _, tc := range []struct {
		threshold time.Duration
		want      string
	}{{200 * time.Second, "active"}, {100 * time.Second, "offline"}} {
		e := withSettings(t, func(st *ServerSettings) { st.OfflineThreshold = tc.threshold })
		c := e.newCast()
		e.post(c.hamlet, "status=active&ping_only=true")
		e.clock.Advance(150 * time.Second)
		one := e.get(c.othello, "users/"+id(c.hamlet)+"/presence").mustJSON(t)["presence"].(map[string]any)
		if got := one["aggregated"].(map[string]any)["status"]; got != tc.want {
			t.Errorf("threshold %v, 150 s old: %v, want %s", tc.threshold, got, tc.want)
		}
	}
}

func TestInvisibleBackdateFollowsSettings(t *testing.T) {
	e := withSettings(t, func(st *ServerSettings) {
		st.OfflineThreshold = 100 * time.Second
		st.PresenceUpdateMinFreq = 20 * time.Second
	})
	c := e.newCast()
	e.post(c.hamlet, "status=active&ping_only=true")
	e.clock.Advance(10 * time.Second)
	e.rm.SetPresenceEnabled(c.hamlet.ID, false)
	want := dbTime(e.clock.Now()).Add(-130 * time.Second) // 100 + 20 + 10
	if row := e.rm.PresenceRow(c.hamlet.ID); !row.LastActive.Equal(want) || !row.LastConnected.Equal(want) {
		t.Fatalf("backdated row %+v, want both at %v", row, want)
	}
}

func TestDateJoinedByVersion(t *testing.T) {
	for _, tc := range []struct {
		fl   int
		want string
	}{
		{FeatureLevelZulip8, "2022-07-04T18:15:39.628715+00:00"},
		{FeatureLevelZulip9, "2022-07-04T18:15:39.628715+00:00"},
		{FeatureLevelZulip10, "2022-07-04T18:15+00:00"},
		{FeatureLevelZulip11, "2022-07-04T18:15+00:00"},
		{FeatureLevelMain, "2022-07-04T18:15+00:00"},
	} {
		e := withSettings(t, func(st *ServerSettings) { st.FeatureLevel = tc.fl })
		c := e.newCast()
		if got := e.get(c.hamlet, "users/me").mustJSON(t)["date_joined"]; got != tc.want {
			t.Errorf("level %d: GET users/me date_joined %v, want %s", tc.fl, got, tc.want)
		}
		members := e.get(c.hamlet, "users").mustJSON(t)["members"].([]any)
		if got := members[0].(map[string]any)["date_joined"]; got != tc.want {
			t.Errorf("level %d: GET users date_joined %v, want %s", tc.fl, got, tc.want)
		}
	}
	// Whole seconds before 10.0 have no fraction, as isoformat() gives.
	st := ServerSettings{FeatureLevel: FeatureLevelZulip9}
	if got := st.formatDateJoined(time.Date(2025, 6, 15, 15, 6, 7, 0, time.UTC)); got != "2025-06-15T15:06:07+00:00" {
		t.Errorf("9.x whole seconds: %s", got)
	}
}

func TestOneUserReadByVersion(t *testing.T) {
	for _, fl := range []int{FeatureLevelZulip8, FeatureLevelZulip9, FeatureLevelZulip10, FeatureLevelZulip11, FeatureLevelMain} {
		e := withSettings(t, func(st *ServerSettings) { st.FeatureLevel = fl })
		c := e.newCast()
		e.post(c.hamlet, "status=active&ping_only=true")
		tsv := ts(dbTime(e.clock.Now()))
		// get_presence_backend is no typed_endpoint: it reads no
		// parameter, lists none as ignored, and its shape is the
		// version's whatever is asked.
		for _, query := range []string{"", "?slim_presence=true&client=x", "?slim_presence=maybe&note=y"} {
			r := e.get(c.othello, "users/"+id(c.hamlet)+"/presence"+query)
			var want string
			if fl >= FeatureLevelMain {
				want = `{"result":"success","msg":"","presence":{"active_timestamp":` + tsv + `,"idle_timestamp":` + tsv + `}}` + "\n"
			} else {
				want = `{"result":"success","msg":"","presence":{"aggregated":{"status":"active","timestamp":` + tsv +
					`},"website":{"status":"active","timestamp":` + tsv + `}}}` + "\n"
			}
			if r.status != http.StatusOK || r.body != want {
				t.Errorf("level %d, %q: %d\n got %q\nwant %q", fl, query, r.status, r.body, want)
			}
		}
	}
}

// TestWindowWithCursorByVersion: Zulip 9.x applies the 14-day window to
// an incremental read too (get_presence_dict_by_realm at 9.0); from 10.0
// a positive last_update_id skips it.
func TestWindowWithCursorByVersion(t *testing.T) {
	for _, tc := range []struct {
		fl     int
		listed bool
	}{{FeatureLevelZulip9, false}, {FeatureLevelZulip10, true}, {FeatureLevelZulip11, true}} {
		e := withSettings(t, func(st *ServerSettings) { st.FeatureLevel = tc.fl })
		c := e.newCast()
		e.post(c.othello, "status=active&ping_only=true")
		cursor := e.rm.LastUpdateID() // positive
		old := dbTime(e.clock.Now()).Add(-20 * 24 * time.Hour)
		e.rm.SetPresenceRow(c.hamlet.ID, old, old)
		r := e.post(c.othello, "status=idle&ping_only=false&last_update_id="+strconv.FormatInt(cursor, 10))
		if _, listed := r.presences(t)[id(c.hamlet)]; listed != tc.listed {
			t.Errorf("level %d: a 20-day-old row that changed after the cursor listed %v: %s", tc.fl, listed, r.body)
		}
	}
}

// TestParameterOrderByVersion: typed_endpoint reports the first failing
// parameter of the view's signature, status first through 10.x and
// alphabetical in 11.x.
func TestParameterOrderByVersion(t *testing.T) {
	for _, tc := range []struct {
		fl   int
		body string
		want string
	}{
		{FeatureLevelZulip9, "ping_only=1", "Missing 'status' argument"},
		{FeatureLevelZulip10, "status=active&ping_only=1&last_update_id=x", "ping_only"},
		{FeatureLevelZulip11, "ping_only=1", "ping_only"},
		{FeatureLevelZulip11, "status=active&ping_only=1&last_update_id=x", "last_update_id"},
	} {
		e := withSettings(t, func(st *ServerSettings) { st.FeatureLevel = tc.fl })
		c := e.newCast()
		r := e.post(c.hamlet, tc.body)
		if r.status != http.StatusBadRequest || !strings.Contains(r.body, tc.want) {
			t.Errorf("level %d, %q: %d %s, want the error of %s", tc.fl, tc.body, r.status, r.body, tc.want)
		}
	}
}

func TestHistoryLimitDaysByVersion(t *testing.T) {
	for _, tc := range []struct {
		fl      int
		ignored bool
	}{{FeatureLevelZulip9, true}, {FeatureLevelZulip10, false}, {FeatureLevelZulip11, false}} {
		e := withSettings(t, func(st *ServerSettings) { st.FeatureLevel = tc.fl })
		c := e.newCast()
		three := dbTime(e.clock.Now()).Add(-3 * 24 * time.Hour)
		e.rm.SetPresenceRow(c.hamlet.ID, three, three)
		r := e.post(c.othello, "status=idle&slim_presence=true&history_limit_days=1")
		if got := strings.Join(ignoredOf(t, r), ","); (got == "history_limit_days") != tc.ignored {
			t.Errorf("level %d: ignored %q", tc.fl, got)
		}
		// Ignored, the default window of 14 days keeps the 3-day-old row.
		if _, listed := r.presences(t)[id(c.hamlet)]; listed != tc.ignored {
			t.Errorf("level %d: 3-day-old row listed %v with history_limit_days=1", tc.fl, listed)
		}
		if r := e.post(c.othello, "status=idle&history_limit_days=x"); (r.status == http.StatusOK) != tc.ignored {
			t.Errorf("level %d: history_limit_days=x answered %d", tc.fl, r.status)
		}
	}
}

func TestBeforeLastUpdateID(t *testing.T) {
	e := withSettings(t, func(st *ServerSettings) { st.FeatureLevel = FeatureLevelZulip8 })
	c := e.newCast()
	e.post(c.hamlet, "status=active&ping_only=true")
	r := e.post(c.othello, "status=idle&last_update_id=0")
	m := r.mustJSON(t)
	if _, ok := m["presence_last_update_id"]; ok {
		t.Errorf("8.x answered presence_last_update_id: %s", r.body)
	}
	if got := strings.Join(ignoredOf(t, r), ","); got != "history_limit_days,last_update_id" && got != "last_update_id" {
		t.Errorf("8.x ignored %q", got)
	}
	// last_update_id does not make it modern; slim_presence does.
	if _, ok := r.presences(t)[c.hamlet.Email]; !ok {
		t.Errorf("8.x with last_update_id is not legacy: %s", r.body)
	}
	if _, ok := e.post(c.othello, "status=idle&slim_presence=true").presences(t)[id(c.hamlet)]; !ok {
		t.Error("8.x slim_presence=true is not keyed by ID")
	}
	// RenderAsOf follows the version too.
	zero := int64(0)
	body, err := e.rm.RenderAsOf(c.othello.ID, e.rm.LastUpdateID(), e.clock.Now(), AsOfRequest{LastUpdateID: &zero})
	if err != nil || strings.Contains(string(body), "presence_last_update_id") || !strings.Contains(string(body), c.hamlet.Email) {
		t.Errorf("8.x RenderAsOf: %s %v", body, err)
	}
	// 9.x has it.
	e.srv.SetServerSettings(ServerSettings{FeatureLevel: FeatureLevelZulip9, PresenceUpdateMinFreq: 55 * time.Second, PresenceLegacyEventOffset: 70 * time.Second, OfflineThreshold: 200 * time.Second})
	if r := e.post(c.othello, "status=idle&last_update_id=0"); r.lastUpdateID(t) == "" || len(ignoredOf(t, r)) != 0 {
		t.Errorf("9.x: %s", r.body)
	}
}

func TestClientNeverIgnored(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	for _, r := range []resp{
		e.post(c.hamlet, "status=active&client=ZulipMobile"),
		e.post(c.hamlet, "status=active&ping_only=true&client=ZulipMobile"),
		e.get(c.hamlet, "users?client=x"),
		e.get(c.hamlet, "users/me?client=x"),
	} {
		if strings.Contains(r.body, "ignored_parameters_unsupported") {
			t.Errorf("client listed as ignored: %s", r.body)
		}
	}
	if got := ignoredOf(t, e.post(c.hamlet, "status=active&client=x&note=cron")); strings.Join(got, ",") != "note" {
		t.Errorf("ignored %v, want [note]", got)
	}
}

func TestIDGaps(t *testing.T) {
	const rate, writes = 0.25, 4000
	e := withSettings(t, func(st *ServerSettings) {
		st.IDGapRate = rate
		st.PresenceUpdateMinFreq = 0
	})
	c := e.newCast()
	users := []User{c.hamlet, c.othello, c.iago, c.polonius}
	e.rm.SetHistoryLimits(HistoryLimits{MaxChanges: 2 * writes, Span: 365 * 24 * time.Hour})
	start := e.rm.LastUpdateID()
	cursor := int64(-1)
	seen := map[string]json.Number{}
	for i := range writes {
		e.clock.Advance(time.Second)
		e.post(users[i%len(users)], "status=active&ping_only=true")
		if i%97 == 0 {
			// A client following deltas still sees every user's newest row.
			r := e.post(c.othello, "status=idle&last_update_id="+strconv.FormatInt(cursor, 10))
			for k, v := range r.presences(t) {
				seen[k] = v.(map[string]any)["active_timestamp"].(json.Number)
			}
			cursor = mustInt(t, r.lastUpdateID(t))
		}
	}
	last := e.rm.LastUpdateID()
	changes, err := e.rm.RowChanges(start)
	if err != nil {
		t.Fatal(err)
	}
	// Each bump skips an ID with probability rate.
	if got := float64(int(last-start)-len(changes)) / float64(len(changes)); math.Abs(got-rate) > 0.03 {
		t.Errorf("%d IDs for %d row changes: %.3f skipped per change, want about %.2f", last-start, len(changes), got, rate)
	}
	held := map[int64]bool{}
	for i, ch := range changes {
		if i > 0 && ch.UpdateID <= changes[i-1].UpdateID {
			t.Fatalf("IDs not rising at %d", i)
		}
		held[ch.UpdateID] = true
	}
	if len(changes) >= int(last-start) {
		t.Fatalf("%d changes for %d IDs: no gaps", len(changes), last-start)
	}
	// The live answer and the history agree, at the newest ID and at one
	// in a gap.
	for _, u := range users {
		if v, ok := seen[id(u)]; !ok || v.String() == "" {
			t.Errorf("deltas never showed %s", u.Email)
		}
	}
	live := e.post(c.othello, "status=idle&slim_presence=true").body
	body, err := e.rm.RenderAsOf(c.othello.ID, e.rm.LastUpdateID(), e.clock.Now(), AsOfRequest{Slim: true})
	if err != nil || string(body) != live {
		t.Fatalf("RenderAsOf at the newest ID:\n got %s\nwant %s (%v)", body, live, err)
	}
	for g := last - 1; g > start; g-- {
		if !held[g] {
			if _, err := e.rm.RowsAsOf(g); err != nil {
				t.Fatalf("RowsAsOf(%d), a gap: %v", g, err)
			}
			break
		}
	}
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	n, err := json.Number(s).Int64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestControlServerSettings(t *testing.T) {
	e := newEnv(t)
	num := func(m map[string]any, k string) string { return m[k].(json.Number).String() }
	status, st := sim(t, e, "", "POST", "/_sim/server_settings", `{"feature_level":278,"presence_update_min_freq_seconds":0,"id_gap_rate":0.5}`)
	if status != 200 || num(st, "feature_level") != "278" || num(st, "presence_update_min_freq_seconds") != "0" || num(st, "offline_threshold_seconds") != "200" || num(st, "id_gap_rate") != "0.5" {
		t.Fatalf("server settings %d %v", status, st)
	}
	want := DefaultServerSettings()
	want.FeatureLevel, want.PresenceUpdateMinFreq, want.IDGapRate = FeatureLevelZulip9, 0, 0.5
	if got := e.srv.ServerSettings(); got != want {
		t.Fatalf("ServerSettings %+v, want %+v", got, want)
	}
	if _, st := sim(t, e, "", "GET", "/_sim/server_settings", ""); num(st, "presence_legacy_event_offset_seconds") != "70" {
		t.Fatalf("GET server settings %v", st)
	}
	if status, _ := sim(t, e, "", "POST", "/_sim/server_settings", `{"id_gap_rate":2}`); status != 400 {
		t.Fatal("id_gap_rate 2 accepted")
	}
}

// TestInvisibleByVersion: turning presence off in Zulip 9.x deletes the
// row and writes an idle one, with no active time, OFFLINE_THRESHOLD_SECS
// + 120 s in the past, whatever the row was; and an invisible user's
// new_user_input is recorded only from 10.0 (do_change_user_setting and
// update_active_status_backend at 9.0 and 10.0).
func TestInvisibleByVersion(t *testing.T) {
	for _, fl := range []int{FeatureLevelZulip9, FeatureLevelZulip10, FeatureLevelZulip11} {
		e := withSettings(t, func(st *ServerSettings) { st.FeatureLevel = fl })
		c := e.newCast()
		e.post(c.hamlet, "status=active&ping_only=true")
		old := dbTime(e.clock.Now()).Add(-3 * 24 * time.Hour)
		e.rm.SetPresenceRow(c.othello.ID, old, old)
		e.clock.Advance(10 * time.Second)
		now := dbTime(e.clock.Now())
		e.rm.SetPresenceEnabled(c.hamlet.ID, false)
		e.rm.SetPresenceEnabled(c.othello.ID, false)
		hamlet, othello := e.rm.PresenceRow(c.hamlet.ID), e.rm.PresenceRow(c.othello.ID)
		if fl < flBackdateInPlace {
			want := now.Add(-320 * time.Second)
			if !hamlet.LastActive.IsZero() || !hamlet.LastConnected.Equal(want) {
				t.Errorf("level %d: recent row became %+v, want idle at %v", fl, hamlet, want)
			}
			if !othello.LastActive.IsZero() || !othello.LastConnected.Equal(want) {
				t.Errorf("level %d: 3-day-old row became %+v, want idle at %v", fl, othello, want)
			}
		} else {
			want := now.Add(-265 * time.Second)
			if !hamlet.LastActive.Equal(want) || !hamlet.LastConnected.Equal(want) {
				t.Errorf("level %d: recent row became %+v, want both at %v", fl, hamlet, want)
			}
			if !othello.LastActive.Equal(old) || !othello.LastConnected.Equal(old) {
				t.Errorf("level %d: 3-day-old row became %+v, want it left alone", fl, othello)
			}
		}
		before := len(e.rm.ActivityIntervals(c.hamlet.ID))
		e.post(c.hamlet, "status=active&ping_only=true&new_user_input=true")
		if got := len(e.rm.ActivityIntervals(c.hamlet.ID)) - before; (got > 0) != (fl >= flInputWhileInvisible) {
			t.Errorf("level %d: an invisible user's new_user_input recorded %d intervals", fl, got)
		}
	}
}
