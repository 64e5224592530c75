package zuliptest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestLegacyStatusBoundary(t *testing.T) {
	c := t0
	for _, tc := range []struct {
		active time.Time
		want   string
	}{
		{c.Add(-70 * time.Second), "active"}, // >= is inclusive
		{c.Add(-70*time.Second - time.Microsecond), "idle"},
		// Whole seconds would say 70 (active); the full times say idle.
		{time.Date(2022, 7, 4, 18, 14, 29, 600000000, time.UTC), "idle"},
	} {
		if got, _ := legacyStatus(tc.active, c, 70*time.Second); got != tc.want {
			t.Errorf("active %v before connected: %s, want %s", c.Sub(tc.active), got, tc.want)
		}
	}
}

func TestWriteAlgorithm(t *testing.T) {
	base := dbTime(t0)
	for _, tc := range []struct {
		name                 string
		connected, active    time.Duration // offsets from base; 1 means NULL
		status               string
		at                   time.Duration
		wantConn, wantActive time.Duration
		wantWrite            bool
	}{
		{"55 s is not enough", 0, 0, "active", 55 * time.Second, 0, 0, false},
		{"55 s and a microsecond is", 0, 0, "active", 55*time.Second + time.Microsecond, 55*time.Second + time.Microsecond, 55*time.Second + time.Microsecond, true},
		{"idle bumps only connected", 0, 0, "idle", time.Minute, time.Minute, 0, true},
		{"active after idle-only row", 0, 1, "active", time.Second, time.Second, time.Second, true},
		{"older request never writes", 0, 0, "active", -time.Hour, 0, 0, false},
		{"active older than connected keeps connected", 10 * time.Second, -time.Minute, "active", 5 * time.Second, 10 * time.Second, 5 * time.Second, true},
		{"NULL connected counts as a day old", 1, 1, "idle", 0, 0, 1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rm := New(nil).DefaultRealm()
			u := rm.AddUser("u@x", "U", RoleMember)
			at := func(d time.Duration) time.Time {
				if d == 1 {
					return time.Time{}
				}
				return base.Add(d)
			}
			rm.SetPresenceRow(u.ID, at(tc.connected), at(tc.active))
			before := rm.PresenceRow(u.ID)
			rm.s.mu.Lock()
			rm.writePresenceLocked(rm.byID[u.ID], tc.status == "active", at(tc.at))
			rm.s.mu.Unlock()
			row := rm.PresenceRow(u.ID)
			if wrote := row.LastUpdateID != before.LastUpdateID; wrote != tc.wantWrite {
				t.Fatalf("wrote %v, want %v", wrote, tc.wantWrite)
			}
			if !row.LastConnected.Equal(at(tc.wantConn)) || !row.LastActive.Equal(at(tc.wantActive)) {
				t.Fatalf("row %+v, want connected %v active %v", row, at(tc.wantConn), at(tc.wantActive))
			}
		})
	}
}

func TestCursorSemantics(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.post(c.hamlet, "status=active")
	old := e.clock.Now().Add(-30 * 24 * time.Hour)
	e.rm.SetPresenceRow(c.othello.ID, old, old)
	e.rm.SetPresenceEnabled(c.cordelia.ID, false)

	t.Run("a positive cursor ignores the window", func(t *testing.T) {
		p := e.post(c.cordelia, "status=idle&last_update_id=1&history_limit_days=1").presences(t)
		if got := keys(p); !equal(got, []string{id(c.othello)}) {
			t.Fatalf("%v", got)
		}
	})
	t.Run("history_limit_days=0 wins over a positive cursor", func(t *testing.T) {
		r := e.post(c.cordelia, "status=idle&last_update_id=1&history_limit_days=0")
		if len(r.presences(t)) != 0 || r.lastUpdateID(t) != "1" {
			t.Fatalf("%s", r.body)
		}
	})
	t.Run("a cursor past the sequence is echoed", func(t *testing.T) {
		if r := e.post(c.cordelia, "status=idle&last_update_id=999"); r.lastUpdateID(t) != "999" {
			t.Fatalf("%s", r.body)
		}
		if r := e.post(c.cordelia, "status=idle&last_update_id=-5&history_limit_days=0"); r.lastUpdateID(t) != "-5" {
			t.Fatalf("%s", r.body)
		}
	})
	t.Run("0 excludes rows still at id 0", func(t *testing.T) {
		e.rm.s.mu.Lock()
		e.rm.rows[c.hamlet.ID].updateID = 0 // a row from before FL 263
		e.rm.s.mu.Unlock()
		if p := e.post(c.cordelia, "status=idle&last_update_id=0").presences(t); p[id(c.hamlet)] != nil {
			t.Fatal("last_update_id=0 returned an id-0 row")
		}
		if p := e.post(c.cordelia, "status=idle&last_update_id=-1").presences(t); p[id(c.hamlet)] == nil {
			t.Fatal("last_update_id=-1 missed an id-0 row")
		}
	})
	t.Run("negative history_limit_days puts the cutoff in the future", func(t *testing.T) {
		r := e.post(c.cordelia, "status=idle&last_update_id=-1&history_limit_days=-1")
		if len(r.presences(t)) != 0 || r.lastUpdateID(t) != "-1" {
			t.Fatalf("%s", r.body)
		}
	})
	t.Run("the full fetch's cursor is the max over returned rows", func(t *testing.T) {
		e.rm.SetPresenceRow(c.iago.ID, old, old) // newest id, outside the window
		r := e.post(c.cordelia, "status=idle&slim_presence=true")
		if got, want := r.lastUpdateID(t), fmt.Sprint(e.rm.PresenceRow(c.hamlet.ID).LastUpdateID); got != want {
			t.Fatalf("cursor %s, want %s", got, want)
		}
	})
}

func TestPresenceDisabled(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.post(c.hamlet, "status=active")
	e.rm.SetSettings(Settings{PresenceDisabled: true})
	now := e.clock.Now()
	r := e.post(c.othello, "status=active&last_update_id=5")
	want := `{"result":"success","msg":"","presences":{},"server_timestamp":` + serverTS(now) + `,"presence_last_update_id":-1}` + "\n"
	if r.body != want {
		t.Fatalf("\n got %q\nwant %q", r.body, want)
	}
	if !e.rm.PresenceRow(c.othello.ID).Exists {
		t.Fatal("presence_disabled stopped the write")
	}
	if r := e.post(c.othello, "status=active&history_limit_days=99999999999"); r.status != 200 {
		t.Fatalf("the window is not computed when disabled: %d", r.status)
	}
	want = `{"result":"success","msg":"","presences":{},"server_timestamp":` + serverTS(now) + "}\n"
	if r := e.get(c.othello, "realm/presence"); r.body != want {
		t.Fatalf("realm/presence %q", r.body)
	}
}

func TestDeactivatedUsersLeaveFullFetches(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.post(c.hamlet, "status=active")
	e.rm.Deactivate(c.hamlet.ID)
	if p := e.post(c.othello, "status=active").presences(t); p[c.hamlet.Email] != nil {
		t.Fatal("deactivated user listed")
	}
	e.rm.Reactivate(c.hamlet.ID)
	if p := e.post(c.othello, "status=active").presences(t); p[c.hamlet.Email] == nil {
		t.Fatal("reactivated user missing")
	}
}

func TestModernKeyOrderAndTruncation(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	r := e.post(c.hamlet, "status=active&last_update_id=-1")
	if got := orderedKeys(t, r.body); !equal(got, []string{"result", "msg", "presences", "server_timestamp", "presence_last_update_id"}) {
		t.Fatalf("envelope keys %v", got)
	}
	now := e.clock.Now()
	want := fmt.Sprintf(`"%d":{"active_timestamp":%d,"idle_timestamp":%d}`, c.hamlet.ID, now.Unix(), now.Unix())
	if !strings.Contains(r.body, want) || !strings.Contains(r.body, `"server_timestamp":`+serverTS(now)) {
		t.Fatalf("%s lacks %s", r.body, want)
	}
	if !strings.Contains(serverTS(now), ".") {
		t.Fatal("server_timestamp is not a float")
	}
}

func TestInvisibleTransitions(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.post(c.hamlet, "status=active")
	before := e.rm.PresenceRow(c.hamlet.ID)
	e.rm.SetPresenceEnabled(c.hamlet.ID, true) // no change: no write
	if e.rm.PresenceRow(c.hamlet.ID) != before {
		t.Fatal("re-enabling an enabled user wrote")
	}
	e.rm.SetPresenceEnabled(c.hamlet.ID, false)
	disabled := e.rm.PresenceRow(c.hamlet.ID)
	e.clock.Advance(time.Hour)
	e.post(c.hamlet, "status=active")
	if e.rm.PresenceRow(c.hamlet.ID) != disabled {
		t.Fatal("an invisible user's POST wrote")
	}
	// Incremental clients see the disable as an ordinary, old entry.
	r := e.post(c.othello, fmt.Sprintf("status=active&last_update_id=%d", before.LastUpdateID))
	p := r.presences(t)
	if p[id(c.hamlet)] == nil || num(p[id(c.hamlet)], "idle_timestamp") != disabled.LastConnected.Unix() {
		t.Fatalf("delta after disable: %s", r.body)
	}
}
