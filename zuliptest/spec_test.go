package zuliptest

import (
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestSpec runs every behavioural case of docs/zulip-presence.md §7 over
// real HTTP. Case numbers are the spec's.
func TestSpec(t *testing.T) {
	t.Run("01 invalid status", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		r := e.post(c.hamlet, "status=foo")
		want := `{"result":"error","msg":"Invalid status: foo","code":"BAD_REQUEST"}` + "\n"
		if r.status != 400 || r.body != want {
			t.Fatalf("got %d %q, want 400 %q", r.status, r.body, want)
		}
	})

	t.Run("02 ping only", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		r := e.post(c.hamlet, "status=active&ping_only=true")
		if r.status != 200 || r.body != "{\"result\":\"success\",\"msg\":\"\"}\n" {
			t.Fatalf("got %d %q", r.status, r.body)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
	})

	t.Run("03-04 legacy idle single user, then slim keys", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		old := e.clock.Now().Add(-20 * 24 * time.Hour)
		for _, u := range []User{c.othello, c.iago, c.cordelia} {
			e.rm.SetPresenceRow(u.ID, old, old)
		}
		now := e.clock.Now()
		r := e.post(c.hamlet, "status=idle")
		want := `{"result":"success","msg":"","presences":{"hamlet@zulip.com":{"aggregated":{"client":"website","status":"idle","timestamp":` + ts(now) +
			`},"website":{"client":"website","status":"idle","timestamp":` + ts(now) + `,"pushable":false}}},"server_timestamp":` + serverTS(now) +
			`,"presence_last_update_id":4}` + "\n"
		if r.body != want {
			t.Fatalf("case 3 body\n got %q\nwant %q", r.body, want)
		}

		e.clock.Advance(time.Second)
		p := e.post(c.othello, "status=idle&slim_presence=true").presences(t)
		if got := keys(p); !equal(got, sorted(id(c.hamlet), id(c.othello))) {
			t.Fatalf("case 4 keys %v", got)
		}
		for k, v := range p {
			if got := orderedKeys(t, mustMarshal(v)); !equal(got, []string{"active_timestamp", "idle_timestamp"}) {
				t.Errorf("case 4 %s value keys %v", k, got)
			}
		}
		if num(p[id(c.othello)], "idle_timestamp") < num(p[id(c.hamlet)], "idle_timestamp") {
			t.Error("case 4: othello's idle_timestamp is older than hamlet's")
		}
	})

	t.Run("05 active vs idle", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		e.post(c.hamlet, "status=idle")
		e.post(c.othello, "status=idle")
		p := e.post(c.othello, "status=active").presences(t)
		if got := status(p, c.othello.Email); got != "active" {
			t.Errorf("othello %q, want active", got)
		}
		if got := status(p, c.hamlet.Email); got != "idle" {
			t.Errorf("hamlet %q, want idle", got)
		}
	})

	t.Run("06-07 empty realm", func(t *testing.T) {
		// Zulip mocks the write out; an invisible requester writes nothing.
		e := newEnv(t)
		c := e.newCast()
		e.rm.SetPresenceEnabled(c.othello.ID, false)
		now := e.clock.Now()
		r := e.post(c.othello, "status=idle&last_update_id=-1")
		want := `{"result":"success","msg":"","presences":{},"server_timestamp":` + serverTS(now) + `,"presence_last_update_id":-1}` + "\n"
		if r.body != want {
			t.Fatalf("case 6\n got %q\nwant %q", r.body, want)
		}
		if r = e.post(c.othello, "status=idle"); r.body != want {
			t.Fatalf("case 7\n got %q\nwant %q", r.body, want)
		}
	})

	t.Run("08-13 last_update_id sequence", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()

		r := e.post(c.hamlet, "status=idle&last_update_id=-1")
		n := e.rm.PresenceRow(c.hamlet.ID).LastUpdateID
		if got := keys(r.presences(t)); !equal(got, []string{id(c.hamlet)}) {
			t.Fatalf("case 8 keys %v", got)
		}
		if got := r.lastUpdateID(t); got != fmt.Sprint(n) {
			t.Fatalf("case 8 cursor %s, want %d", got, n)
		}

		written := e.rm.Stats().RowsWritten
		r = e.post(c.hamlet, "status=idle&slim_presence=false")
		if _, legacy := r.presences(t)[c.hamlet.Email]; !legacy || r.lastUpdateID(t) != fmt.Sprint(n) {
			t.Fatalf("case 9: %s", r.body)
		}
		if e.rm.Stats().RowsWritten != written || e.rm.PresenceRow(c.hamlet.ID).LastUpdateID != n {
			t.Fatal("case 9: a repeat within 55 s wrote the row")
		}

		r = e.post(c.othello, "status=idle&last_update_id=-1")
		if got := keys(r.presences(t)); !equal(got, sorted(id(c.hamlet), id(c.othello))) || r.lastUpdateID(t) != fmt.Sprint(n+1) {
			t.Fatalf("case 10: %s", r.body)
		}

		r = e.post(c.othello, fmt.Sprintf("status=idle&last_update_id=%d", n+1))
		if len(r.presences(t)) != 0 || r.lastUpdateID(t) != fmt.Sprint(n+1) {
			t.Fatalf("case 11: %s", r.body)
		}

		e.post(c.hamlet, "status=active")
		if got := e.rm.PresenceRow(c.hamlet.ID).LastUpdateID; got != n+2 {
			t.Fatalf("case 12: hamlet's active write took id %d, want %d", got, n+2)
		}
		r = e.post(c.othello, fmt.Sprintf("status=idle&last_update_id=%d", n+1))
		if got := keys(r.presences(t)); !equal(got, []string{id(c.hamlet)}) || r.lastUpdateID(t) != fmt.Sprint(n+2) {
			t.Fatalf("case 12: %s", r.body)
		}

		n = n + 2
		r = e.post(c.iago, fmt.Sprintf("status=idle&last_update_id=%d", n))
		if got := keys(r.presences(t)); !equal(got, []string{id(c.iago)}) || r.lastUpdateID(t) != fmt.Sprint(n+1) {
			t.Fatalf("case 13: %s", r.body)
		}
	})

	t.Run("14 history_limit_days", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		e.post(c.hamlet, "status=idle")
		e.post(c.othello, "status=idle")
		e.rm.SetPresenceRow(c.othello.ID, e.clock.Now().Add(-100*24*time.Hour), time.Time{})
		for _, tc := range []struct {
			days string
			want []string
		}{
			{"50", sorted(id(c.hamlet), id(c.iago))},
			{"101", sorted(id(c.hamlet), id(c.iago), id(c.othello))},
			{"0", nil},
		} {
			r := e.post(c.iago, "status=idle&last_update_id=-1&history_limit_days="+tc.days)
			if got := keys(r.presences(t)); !equal(got, tc.want) {
				t.Errorf("history_limit_days=%s: keys %v, want %v", tc.days, got, tc.want)
			}
			if tc.days == "0" && r.lastUpdateID(t) != "-1" {
				t.Errorf("history_limit_days=0: cursor %s, want the client's -1", r.lastUpdateID(t))
			}
		}
	})

	t.Run("15 default window", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		e.rm.SetPresenceEnabled(c.cordelia.ID, false) // a requester without a row
		now := e.clock.Now()
		week := now.Add(-7 * 24 * time.Hour)
		e.rm.SetPresenceRow(c.hamlet.ID, week, week)
		r := e.post(c.cordelia, "status=idle")
		if got := keys(r.presences(t)); !equal(got, []string{c.hamlet.Email}) {
			t.Fatalf("1 week: %v", got)
		}
		if r.lastUpdateID(t) != fmt.Sprint(e.rm.PresenceRow(c.hamlet.ID).LastUpdateID) {
			t.Fatalf("1 week cursor: %s", r.body)
		}
		weeks3 := now.Add(-21 * 24 * time.Hour)
		e.rm.SetPresenceRow(c.hamlet.ID, weeks3, weeks3)
		if r = e.post(c.cordelia, "status=idle"); len(r.presences(t)) != 0 || r.lastUpdateID(t) != "-1" {
			t.Fatalf("3 weeks: %s", r.body)
		}
		e.rm.SetPresenceRow(c.hamlet.ID, time.Time{}, time.Time{})
		if r = e.post(c.cordelia, "status=idle&last_update_id=-1"); len(r.presences(t)) != 0 {
			t.Fatalf("NULL timestamps: %s", r.body)
		}
	})

	t.Run("16 NULL timestamps", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		e.rm.SetPresenceRow(c.hamlet.ID, time.Time{}, time.Time{})
		joined := ts(t0)
		want := `{"result":"success","msg":"","presence":{"aggregated":{"status":"offline","timestamp":` + joined +
			`},"website":{"status":"active","timestamp":` + joined + `}}}` + "\n"
		if r := e.get(c.othello, "users/"+id(c.hamlet)+"/presence"); r.body != want {
			t.Fatalf("single-user GET\n got %q\nwant %q", r.body, want)
		}
		want = `{"result":"success","msg":"","presence":{"active_timestamp":` + joined + `,"idle_timestamp":` + joined + `}}` + "\n"
		e.srv.SetServerSettings(mainSettings()) // released versions have no slim one-user read
		if r := e.get(c.othello, "users/"+id(c.hamlet)+"/presence?slim_presence=true"); r.body != want {
			t.Fatalf("slim single-user GET\n got %q\nwant %q", r.body, want)
		}
		if p := e.get(c.othello, "realm/presence").presences(t); p[c.hamlet.Email] != nil {
			t.Fatal("realm/presence lists a NULL row")
		}
		now := e.clock.Now()
		e.rm.SetPresenceRow(c.hamlet.ID, now, now)
		if p := e.get(c.othello, "realm/presence").presences(t); p[c.hamlet.Email] == nil {
			t.Fatal("realm/presence omits a fresh row")
		}
	})

	t.Run("17 invisible user's POST", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		e.rm.SetPresenceEnabled(c.othello.ID, false)
		before := e.rm.PresenceRow(c.othello.ID)
		e.post(c.othello, "status=active&new_user_input=true")
		if after := e.rm.PresenceRow(c.othello.ID); after != before {
			t.Fatalf("row changed: %+v → %+v", before, after)
		}
		if p := e.post(c.hamlet, "status=active").presences(t); p[c.othello.Email] != nil {
			t.Fatal("the invisible user is in hamlet's answer")
		}
		if n := len(e.rm.ActivityIntervals(c.othello.ID)); n != 1 {
			t.Fatalf("%d activity intervals, want 1", n)
		}
	})

	t.Run("18 enable after disable", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		e.rm.SetPresenceEnabled(c.hamlet.ID, false)
		if e.rm.PresenceRow(c.hamlet.ID).Exists {
			t.Fatal("disabling created a row")
		}
		e.clock.Advance(time.Minute)
		e.rm.SetPresenceEnabled(c.hamlet.ID, true)
		now := dbTime(e.clock.Now())
		if row := e.rm.PresenceRow(c.hamlet.ID); !row.Exists || !row.LastActive.Equal(now) || !row.LastConnected.Equal(now) || row.LastUpdateID == 0 {
			t.Fatalf("row %+v, want both times %v", row, now)
		}
	})

	t.Run("19 disable with recent row", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		e.post(c.hamlet, "status=active")
		e.clock.Advance(10 * time.Second)
		before := e.rm.PresenceRow(c.hamlet.ID)
		e.rm.SetPresenceEnabled(c.hamlet.ID, false)
		b := dbTime(e.clock.Now()).Add(-265 * time.Second)
		row := e.rm.PresenceRow(c.hamlet.ID)
		if !row.LastActive.Equal(b) || !row.LastConnected.Equal(b) || row.LastUpdateID <= before.LastUpdateID {
			t.Fatalf("row %+v, want both times %v and a new id", row, b)
		}
	})

	t.Run("20 disable with old rows", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		now := e.clock.Now()
		old := now.Add(-100 * 24 * time.Hour)
		e.rm.SetPresenceRow(c.hamlet.ID, old, old)
		before := e.rm.PresenceRow(c.hamlet.ID)
		e.rm.SetPresenceEnabled(c.hamlet.ID, false)
		if after := e.rm.PresenceRow(c.hamlet.ID); after != before {
			t.Fatalf("100-day-old row changed: %+v → %+v", before, after)
		}

		e.rm.SetPresenceRow(c.othello.ID, now.Add(-10*time.Second), old)
		e.rm.SetPresenceEnabled(c.othello.ID, false)
		row := e.rm.PresenceRow(c.othello.ID)
		if b := dbTime(now).Add(-265 * time.Second); !row.LastConnected.Equal(b) || !row.LastActive.Equal(dbTime(old)) {
			t.Fatalf("old active, recent connected: %+v, want connected %v and active %v", row, b, dbTime(old))
		}
	})

	t.Run("21 guest restriction", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		e.rm.ShareAccess(c.polonius.ID, c.hamlet.ID)
		e.post(c.hamlet, "status=active")
		e.post(c.othello, "status=active")
		// The server setting alone restricts nothing: the realm must
		// also keep guests out of can_access_all_users_group.
		e.rm.SetSettings(Settings{CanAccessAllUsersGroupLimitsPresence: true})
		if got := keys(e.post(c.polonius, "status=active").presences(t)); !equal(got, sorted(c.hamlet.Email, c.othello.Email, c.polonius.Email)) {
			t.Fatalf("server setting alone: %v", got)
		}
		e.rm.SetSettings(Settings{RestrictGuestUserAccess: true})
		if got := keys(e.post(c.polonius, "status=active").presences(t)); !equal(got, sorted(c.hamlet.Email, c.othello.Email, c.polonius.Email)) {
			t.Fatalf("realm setting alone: %v", got)
		}
		e.rm.SetSettings(Settings{RestrictGuestUserAccess: true, CanAccessAllUsersGroupLimitsPresence: true})
		if got := keys(e.post(c.polonius, "status=active").presences(t)); !equal(got, sorted(c.hamlet.Email, c.polonius.Email)) {
			t.Fatalf("restricted: %v", got)
		}
		if got := keys(e.get(c.polonius, "realm/presence").presences(t)); !equal(got, sorted(c.hamlet.Email, c.polonius.Email)) {
			t.Fatalf("restricted realm/presence: %v", got)
		}
		e.rm.SetSettings(Settings{})
		want := sorted(c.hamlet.Email, c.othello.Email, c.polonius.Email)
		if got := keys(e.post(c.polonius, "status=active").presences(t)); !equal(got, want) {
			t.Fatalf("unrestricted: %v", got)
		}
		if got := keys(e.get(c.polonius, "realm/presence").presences(t)); !equal(got, want) {
			t.Fatalf("unrestricted realm/presence: %v", got)
		}
	})

	t.Run("22 bots", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		r := e.post(c.bot, "")
		want := `{"result":"error","msg":"This endpoint does not accept bot requests.","code":"BAD_REQUEST"}` + "\n"
		if r.status != 400 || r.body != want {
			t.Fatalf("bot POST: %d %q", r.status, r.body)
		}
		e.post(c.hamlet, "status=active")
		p := e.get(c.bot, "realm/presence").presences(t)
		if got := keys(p); !equal(got, []string{c.hamlet.Email}) {
			t.Fatalf("bot GET realm/presence keys %v", got)
		}
		if got := orderedKeys(t, mustMarshal(p[c.hamlet.Email])); !equal(got, []string{"aggregated", "website"}) {
			t.Fatalf("not the legacy format: %v", got)
		}
	})

	t.Run("23-24 write throttling", func(t *testing.T) {
		for _, s := range []string{"active", "idle"} {
			e := newEnv(t)
			c := e.newCast()
			tt := e.clock.Now()
			old := tt.Add(-24 * time.Hour)
			e.rm.SetPresenceRow(c.hamlet.ID, old, old)
			var r resp
			for _, off := range []time.Duration{-5, -2, -7} {
				e.clock.Set(tt.Add(off * time.Second))
				r = e.post(c.hamlet, "status="+s)
			}
			agg := r.presences(t)[c.hamlet.Email].(map[string]any)["aggregated"]
			want := fmt.Sprintf(`{"client":"website","status":"%s","timestamp":%s}`, s, ts(tt.Add(-5*time.Second)))
			if got := mustMarshalOrdered(t, r.body, c.hamlet.Email, "aggregated"); got != want {
				t.Errorf("case 23 %s: aggregated %s (%v), want %s", s, got, agg, want)
			}
			if s != "active" {
				continue
			}
			e.clock.Set(tt.Add(56 * time.Second))
			r = e.post(c.hamlet, "status=active")
			want = fmt.Sprintf(`{"client":"website","status":"active","timestamp":%s}`, ts(tt.Add(56*time.Second)))
			if got := mustMarshalOrdered(t, r.body, c.hamlet.Email, "aggregated"); got != want {
				t.Errorf("case 24: aggregated %s, want %s", got, want)
			}
		}
	})

	t.Run("25 mixed", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		tt := e.clock.Now()
		old := tt.Add(-24 * time.Hour)
		e.rm.SetPresenceRow(c.hamlet.ID, old, old)
		e.clock.Set(tt.Add(-5 * time.Second))
		e.post(c.hamlet, "status=idle")
		e.clock.Set(tt.Add(-3 * time.Second))
		r := e.post(c.hamlet, "status=active")
		want := fmt.Sprintf(`{"client":"website","status":"active","timestamp":%s}`, ts(tt.Add(-3*time.Second)))
		if got := mustMarshalOrdered(t, r.body, c.hamlet.Email, "aggregated"); got != want {
			t.Errorf("aggregated %s, want %s", got, want)
		}
	})

	t.Run("26 offline in single-user GET", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		tt := e.clock.Now()
		e.clock.Set(tt.Add(-5 * time.Second))
		e.post(c.hamlet, "status=idle")
		e.clock.Set(tt.Add(201 * time.Second))
		at := ts(tt.Add(-5 * time.Second))
		want := `{"result":"success","msg":"","presence":{"aggregated":{"status":"offline","timestamp":` + at +
			`},"website":{"status":"idle","timestamp":` + at + `}}}` + "\n"
		if r := e.get(c.othello, "users/"+c.hamlet.Email+"/presence"); r.body != want {
			t.Fatalf("\n got %q\nwant %q", r.body, want)
		}
	})

	t.Run("27 legacy derivation", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		now := e.clock.Now()
		for _, tc := range []struct {
			active       time.Time
			status, when string
		}{
			{now, "active", ts(now)},
			{now.Add(-50 * time.Second), "active", ts(now.Add(-50 * time.Second))},
			{now.Add(-3 * time.Minute), "idle", ts(now)},
		} {
			e.rm.SetPresenceRow(c.hamlet.ID, now, tc.active)
			r := e.get(c.othello, "realm/presence")
			want := fmt.Sprintf(`{"client":"website","status":"%s","timestamp":%s,"pushable":false}`, tc.status, tc.when)
			if got := mustMarshalOrdered(t, r.body, c.hamlet.Email, "website"); got != want {
				t.Errorf("active %v: website %s, want %s", now.Sub(tc.active), got, want)
			}
		}
	})

	t.Run("28 first idle creates half row", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		e.post(c.hamlet, "status=idle")
		row := e.rm.PresenceRow(c.hamlet.ID)
		if !row.Exists || !row.LastActive.IsZero() || row.LastConnected.IsZero() {
			t.Fatalf("after idle: %+v", row)
		}
		e.post(c.hamlet, "status=active")
		row = e.rm.PresenceRow(c.hamlet.ID)
		if row.LastActive.IsZero() || row.LastConnected.IsZero() {
			t.Fatalf("after active: %+v", row)
		}
	})

	t.Run("29 single-user GET errors", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		gone := e.rm.AddUser("gone@zulip.com", "Gone", RoleMember)
		e.post(gone, "status=active")
		e.rm.Deactivate(gone.ID)
		e.post(c.othello, "status=active")
		for _, tc := range []struct {
			arg, msg string
		}{
			{"nobody@zulip.com", "No such user"},
			{"99999", "No such user"},
			{gone.Email, "No such user"},
			{id(gone), "No such user"},
			{c.hamlet.Email, "No presence data for hamlet@zulip.com"},
			{id(c.hamlet), "No presence data for " + id(c.hamlet)},
			{id(c.bot), "Presence is not supported for bot users."},
		} {
			r := e.get(c.iago, "users/"+url.PathEscape(tc.arg)+"/presence")
			want := `{"result":"error","msg":"` + tc.msg + `","code":"BAD_REQUEST"}` + "\n"
			if r.status != 400 || r.body != want {
				t.Errorf("%s: %d %q, want %q", tc.arg, r.status, r.body, want)
			}
		}
		e.rm.SetSettings(Settings{RestrictGuestUserAccess: true, CanAccessAllUsersGroupLimitsPresence: true})
		r := e.get(c.polonius, "users/"+id(c.othello)+"/presence")
		if r.status != 400 || !strings.Contains(r.body, `"msg":"Insufficient permission"`) {
			t.Errorf("guest without access: %d %q", r.status, r.body)
		}
	})

	t.Run("30 ignored params", func(t *testing.T) {
		e := newEnv(t)
		c := e.newCast()
		r := e.post(c.hamlet, "status=idle&foo=1")
		if r.status != 200 || !strings.HasSuffix(r.body, `,"ignored_parameters_unsupported":["foo"]}`+"\n") {
			t.Fatalf("%d %q", r.status, r.body)
		}
	})
}

func mustMarshal(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// mustMarshalOrdered returns, from a presence answer, the raw JSON text of
// presences[user][part], keeping the server's key order.
func mustMarshalOrdered(t *testing.T, body, user, part string) string {
	t.Helper()
	var doc struct {
		Presences map[string]map[string]json.RawMessage `json:"presences"`
	}
	if err := json.Unmarshal([]byte(body), &doc); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return string(doc.Presences[user][part])
}

func num(v any, key string) int64 {
	n, _ := v.(map[string]any)[key].(json.Number).Int64()
	return n
}

func status(p map[string]any, email string) string {
	return p[email].(map[string]any)["aggregated"].(map[string]any)["status"].(string)
}
