package zuliptest

import (
	"errors"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"
	"unsafe"
)

// asOfForm is one presence request, as a live form and as an AsOfRequest.
type asOfForm struct {
	name string
	form func(seq int64) string
	req  func(seq int64) AsOfRequest
}

func int64p(n int64) *int64 { return &n }

// asOfForms are the request shapes the tests compare: full fetches in both
// formats, a narrow window, a cursor, and an unknown parameter.
var asOfForms = []asOfForm{
	{"slim", func(int64) string { return "status=idle&slim_presence=true" },
		func(int64) AsOfRequest { return AsOfRequest{Slim: true} }},
	{"legacy", func(int64) string { return "status=idle" },
		func(int64) AsOfRequest { return AsOfRequest{} }},
	{"legacy 1 day", func(int64) string { return "status=idle&history_limit_days=1" },
		func(int64) AsOfRequest { return AsOfRequest{HistoryLimitDays: int64p(1)} }},
	{"slim 0 days", func(int64) string { return "status=idle&slim_presence=true&history_limit_days=0" },
		func(int64) AsOfRequest { return AsOfRequest{Slim: true, HistoryLimitDays: int64p(0)} }},
	{"cursor", func(seq int64) string { return fmt.Sprintf("status=idle&last_update_id=%d", seq-3) },
		func(seq int64) AsOfRequest { return AsOfRequest{LastUpdateID: int64p(seq - 3)} }},
	{"cursor -1", func(int64) string { return "status=idle&last_update_id=-1&history_limit_days=1" },
		func(int64) AsOfRequest { return AsOfRequest{LastUpdateID: int64p(-1), HistoryLimitDays: int64p(1)} }},
	{"ignored", func(int64) string { return "status=idle&bogus=1&slim_presence=true" },
		func(int64) AsOfRequest { return AsOfRequest{Slim: true, Ignored: []string{"bogus"}} }},
}

// recording is a live answer and the realm's update ID when it was given.
type recording struct {
	seq    int64
	now    time.Time
	viewer User
	form   asOfForm
	req    AsOfRequest
	body   string
	rows   map[int64]Row
}

// TestRenderAsOf records the live answers of several viewers along a
// sequence of writes, invisible toggles and deactivations, then checks
// that RenderAsOf gives each of them back, byte for byte, and that
// RowsAsOf gives back the rows of that moment.
func TestRenderAsOf(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.rm.SetSettings(Settings{RestrictGuestUserAccess: true, CanAccessAllUsersGroupLimitsPresence: true})
	e.rm.ShareAccess(c.polonius.ID, c.hamlet.ID)
	e.rm.ShareAccess(c.polonius.ID, c.othello.ID)
	e.rm.SetHistoryLimits(HistoryLimits{Span: 48 * time.Hour}) // the sequence spans 36 hours
	viewers := []User{c.hamlet, c.polonius, c.cordelia}

	var recs []recording
	// record takes every viewer's live answers now. The viewers' own
	// POSTs write their rows (once per 55 s), which is part of the
	// sequence: each answer is keyed by the update ID right after it.
	record := func() {
		t.Helper()
		now := e.rm.Now()
		for _, v := range viewers {
			for _, f := range asOfForms {
				before := e.rm.LastUpdateID()
				r := e.post(v, f.form(before))
				if r.status != http.StatusOK {
					t.Fatalf("%s %s: %d %s", v.Email, f.name, r.status, r.body)
				}
				recs = append(recs, recording{
					seq: e.rm.LastUpdateID(), now: now, viewer: v, form: f, req: f.req(before),
					body: r.body, rows: allRows(e.rm),
				})
			}
		}
		checkHistoryInvariant(t, e.rm)
	}
	// changeActivity deactivates or reactivates a user. The answers
	// recorded at the current ID no longer describe the realm as of it
	// (the state just before the next ID), so they are dropped.
	changeActivity := func(f func(int64), u User) {
		seq := e.rm.LastUpdateID()
		f(u.ID)
		kept := recs[:0]
		for _, r := range recs {
			if r.seq != seq {
				kept = append(kept, r)
			}
		}
		recs = kept
	}

	e.post(c.hamlet, "status=active")
	e.post(c.othello, "status=active")
	record()
	e.clock.Advance(30 * time.Second)
	e.post(c.iago, "status=idle")
	e.post(c.cordelia, "status=active")
	record()
	e.clock.Advance(70 * time.Second)
	e.rm.SetPresenceEnabled(c.cordelia.ID, false) // active recently: row recreated
	e.post(c.othello, "status=idle")
	record()
	changeActivity(e.rm.Deactivate, c.othello)
	e.clock.Advance(2 * time.Minute)
	e.post(c.iago, "status=active")
	record()
	e.clock.Advance(4 * time.Minute)
	e.post(c.iago, "status=idle")
	e.rm.SetPresenceEnabled(c.iago.ID, false) // only connected recently: moved back
	e.rm.SetPresenceRow(c.othello.ID, e.rm.Now().Add(-3*24*time.Hour), time.Time{})
	record()
	changeActivity(e.rm.Reactivate, c.othello)
	e.rm.SetPresenceEnabled(c.cordelia.ID, true) // a forced active write
	e.rm.SetPresenceRow(c.bot.ID, e.rm.Now(), e.rm.Now())
	record()
	e.clock.Advance(36 * time.Hour) // hamlet's and othello's rows leave the 1-day window
	e.rm.SetPresenceRow(c.polonius.ID, time.Time{}, time.Time{})
	record()
	changeActivity(e.rm.Deactivate, c.iago)
	changeActivity(e.rm.Deactivate, c.othello)
	record()

	if len(recs) == 0 {
		t.Fatal("nothing recorded")
	}
	seen := map[int64]bool{}
	for _, r := range recs {
		seen[r.seq] = true
		got, err := e.rm.RenderAsOf(r.viewer.ID, r.seq, r.now, r.req)
		if err != nil {
			t.Fatalf("as of %d, %s %s: %v", r.seq, r.viewer.Email, r.form.name, err)
		}
		if string(got) != r.body {
			t.Errorf("as of %d, %s %s:\n got %s\nwant %s", r.seq, r.viewer.Email, r.form.name, got, r.body)
		}
		rows, err := e.rm.RowsAsOf(r.seq)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(rows, r.rows) {
			t.Errorf("rows as of %d:\n got %v\nwant %v", r.seq, rows, r.rows)
		}
	}
	if len(seen) < 6 {
		t.Errorf("only %d distinct update IDs recorded", len(seen))
	}
	// The check means something only if the past differs from today.
	stale := 0
	for _, r := range recs {
		now, _ := e.rm.RenderAsOf(r.viewer.ID, e.rm.LastUpdateID(), r.now, r.req)
		if string(now) != r.body {
			stale++
		}
	}
	if stale < len(recs)/2 {
		t.Errorf("only %d of %d recorded answers differ from today's", stale, len(recs))
	}

	// At the current ID, as-of answers are live answers. The restricted
	// guest sees only itself and the users it shares access with.
	e.clock.Advance(time.Minute)
	for _, v := range viewers {
		for _, f := range asOfForms {
			before := e.rm.LastUpdateID()
			live := e.post(v, f.form(before))
			got, err := e.rm.RenderAsOf(v.ID, e.rm.LastUpdateID(), e.rm.Now(), f.req(before))
			if err != nil || string(got) != live.body {
				t.Errorf("now, %s %s:\n got %s, %v\nwant %s", v.Email, f.name, got, err, live.body)
			}
		}
	}
	guest, _ := e.rm.RenderAsOf(c.polonius.ID, e.rm.LastUpdateID(), e.rm.Now(), AsOfRequest{Slim: true, HistoryLimitDays: int64p(1000)})
	if p := decodeJSON(t, string(guest))["presences"].(map[string]any); !equal(keys(p), sorted(id(c.hamlet), id(c.polonius))) {
		t.Errorf("guest sees %v", keys(p))
	}
}

// allRows is every user's existing row.
func allRows(rm *Realm) map[int64]Row {
	out := map[int64]Row{}
	for _, u := range rm.Users() {
		if row := rm.PresenceRow(u.ID); row.Exists {
			out[u.ID] = row
		}
	}
	return out
}

// checkHistoryInvariant checks that the history holds exactly the changes
// after its floor, each starting from where the user's previous one ended,
// and that the last of each is the live row.
func checkHistoryInvariant(t *testing.T, rm *Realm) {
	t.Helper()
	changes, err := rm.RowChanges(rm.OldestAsOfID())
	if err != nil {
		t.Fatal(err)
	}
	if want := rm.LastUpdateID() - rm.OldestAsOfID(); int64(len(changes)) != want {
		t.Fatalf("%d changes kept, want %d", len(changes), want)
	}
	last := map[int64]Row{}
	for i, ch := range changes {
		if ch.UpdateID != rm.OldestAsOfID()+int64(i)+1 || ch.After.LastUpdateID != ch.UpdateID || !ch.After.Exists {
			t.Fatalf("change %d: %+v", i, ch)
		}
		if prev, ok := last[ch.UserID]; ok && prev != ch.Before {
			t.Fatalf("change %d starts from %+v, the row was %+v", ch.UpdateID, ch.Before, prev)
		}
		last[ch.UserID] = ch.After
	}
	for uid, row := range last {
		if live := rm.PresenceRow(uid); live != row {
			t.Fatalf("user %d: last change left %+v, live row %+v", uid, row, live)
		}
	}
}

func TestRowChangesRecordBackdating(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.post(c.hamlet, "status=active")
	written := e.rm.PresenceRow(c.hamlet.ID)
	e.clock.Advance(10 * time.Second)
	e.rm.SetPresenceEnabled(c.hamlet.ID, false)
	changes, err := e.rm.RowChanges(written.LastUpdateID - 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(changes) != 2 {
		t.Fatalf("%d changes: %+v", len(changes), changes)
	}
	created, moved := changes[0], changes[1]
	if created.Before.Exists || created.After != written || !created.At.Equal(e.clock.Now().Add(-10*time.Second)) {
		t.Errorf("creation recorded as %+v", created)
	}
	b := dbTime(e.clock.Now()).Add(-265 * time.Second) // 200 + 55 + 10
	if moved.Before != written || !moved.After.LastActive.Equal(b) || !moved.After.LastConnected.Equal(b) || !moved.At.Equal(e.clock.Now()) {
		t.Errorf("backdating recorded as %+v", moved)
	}
	rows, _ := e.rm.RowsAsOf(written.LastUpdateID)
	if rows[c.hamlet.ID] != written {
		t.Errorf("row as of the write: %+v", rows[c.hamlet.ID])
	}
	if rows, _ := e.rm.RowsAsOf(written.LastUpdateID - 1); rows[c.hamlet.ID].Exists {
		t.Errorf("row exists before it was created")
	}
}

func TestHistoryLimits(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.rm.SetHistoryLimits(HistoryLimits{Span: 10 * time.Minute})
	type point struct {
		at  time.Time
		seq int64
	}
	var points []point
	for range 30 {
		e.post(c.hamlet, "status=active")
		e.post(c.othello, "status=idle")
		points = append(points, point{e.rm.Now(), e.rm.LastUpdateID()})
		e.clock.Advance(time.Minute)
		checkHistoryInvariant(t, e.rm)
	}
	// The last write was at points[29]; ten minutes before it is kept.
	floor := e.rm.OldestAsOfID()
	if floor != points[18].seq {
		t.Errorf("oldest as-of ID %d, want %d", floor, points[18].seq)
	}
	for i, p := range points {
		got, err := e.rm.UpdateIDAt(p.at.Add(30 * time.Second))
		switch {
		case i < 18:
			if !errors.Is(err, ErrHistoryTrimmed) {
				t.Errorf("update ID at point %d: %d, %v", i, got, err)
			}
		case err != nil || got != p.seq:
			t.Errorf("update ID at point %d: %d, %v, want %d", i, got, err, p.seq)
		}
	}
	if _, err := e.rm.RenderAsOf(c.hamlet.ID, floor-1, e.rm.Now(), AsOfRequest{}); !errors.Is(err, ErrHistoryTrimmed) {
		t.Errorf("as of a dropped ID: %v", err)
	}
	if _, err := e.rm.RowsAsOf(e.rm.LastUpdateID() + 1); err == nil || errors.Is(err, ErrHistoryTrimmed) {
		t.Errorf("as of a future ID: %v", err)
	}
	if _, err := e.rm.RenderAsOf(c.hamlet.ID, floor, e.rm.Now(), AsOfRequest{HistoryLimitDays: int64p(1 << 40)}); err == nil || !strings.Contains(err.Error(), "500") {
		t.Errorf("an overflowing window: %v", err)
	}

	// A count limit keeps exactly that many changes, in that much memory.
	e.rm.SetHistoryLimits(HistoryLimits{MaxChanges: 5})
	if n := e.rm.LastUpdateID() - e.rm.OldestAsOfID(); n != 5 {
		t.Errorf("%d changes kept, want 5", n)
	}
	if size := len(e.rm.hist.changes.buf); size > 16 {
		t.Errorf("buffer of %d changes after shrinking", size)
	}
	// (De)activations that no row change follows raise the floor too.
	for range 4 {
		e.rm.Deactivate(c.iago.ID)
		e.rm.Reactivate(c.iago.ID)
	}
	if e.rm.OldestAsOfID() != e.rm.LastUpdateID() || e.rm.hist.acts.len() > 5 {
		t.Errorf("oldest as-of ID %d of %d with %d activity records", e.rm.OldestAsOfID(), e.rm.LastUpdateID(), e.rm.hist.acts.len())
	}
	if _, err := e.rm.RenderAsOf(c.hamlet.ID, e.rm.LastUpdateID(), e.rm.Now(), AsOfRequest{}); err != nil {
		t.Error(err)
	}

	// A long run stays within MaxChanges, buffer included.
	rm := New(e.clock.Now).AddRealm("big.example")
	u := rm.AddUser("u@big.example", "U", RoleMember)
	rm.SetHistoryLimits(HistoryLimits{Span: 1000 * time.Hour, MaxChanges: 100})
	for i := range 1000 {
		rm.SetPresenceRow(u.ID, t0.Add(time.Duration(i)*time.Minute), time.Time{})
	}
	if n := rm.LastUpdateID() - rm.OldestAsOfID(); n != 100 || len(rm.hist.changes.buf) > 101 {
		t.Errorf("%d changes kept in a buffer of %d", n, len(rm.hist.changes.buf))
	}
	checkHistoryInvariant(t, rm)
	if size := unsafe.Sizeof(rowChange{}); size != 88 {
		t.Errorf("a change takes %d bytes; the documentation says 88", size)
	}
}
