package cache

import (
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

func answer(id int64, ts float64, rows ...presence.Row) presence.Decoded {
	return presence.Decoded{Rows: rows, ServerTimestamp: ts, HasLastUpdateID: true, LastUpdateID: id}
}

func row(id, sec int64) presence.Row {
	return presence.Row{UserID: id, Presence: presence.Presence{Active: sec, Idle: sec}}
}

// TestViewMergesMonotonically: a full fetch syncs the view; a delta from
// its cursor moves it; an older answer, or one from beyond the cursor,
// changes nothing; an id below the cursor asked from resets the view.
func TestViewMergesMonotonically(t *testing.T) {
	v := &View{}
	if _, ok := v.Cursor(t0, 14, time.Hour); ok {
		t.Fatal("a new view has a cursor")
	}
	v.Apply(-1, 14, answer(10, 1000, row(1, 900), row(2, 950)), t0)
	if c, ok := v.Cursor(t0, 14, time.Hour); !ok || c != 10 {
		t.Fatalf("cursor %d, %v after a full fetch answering 10", c, ok)
	}
	if _, ok := v.Cursor(t0, 30, time.Hour); ok {
		t.Fatal("a wider window than the full fetch's needs no full fetch")
	}
	v.Apply(10, 14, answer(12, 1010, row(2, 1005)), t0.Add(time.Second))
	v.Apply(10, 14, answer(11, 1008, row(2, 1001)), t0.Add(2*time.Second)) // older, arrived late
	v.Apply(13, 14, answer(15, 1020, row(3, 1019)), t0.Add(3*time.Second)) // beyond the cursor
	if p, _ := v.Row(2); p.Idle != 1005 {
		t.Fatalf("row 2 = %+v, want the newest answer's", p)
	}
	if _, ok := v.Row(3); ok {
		t.Fatal("a fetch from beyond the view's cursor was merged")
	}
	if c, _ := v.Cursor(t0, 14, time.Hour); c != 12 {
		t.Fatalf("cursor %d, want 12", c)
	}
	if v.Apply(12, 14, answer(-1, 1030), t0.Add(4*time.Second)); true {
		if _, ok := v.Cursor(t0, 14, time.Hour); ok {
			t.Fatal("an answer id below the cursor asked from did not reset the view")
		}
	}
}

// TestViewServesBoundaries: a tab whose cursor is one the view's fetches
// produced gets exactly the rows changed since; any other cursor, or a
// stale view, is not served.
func TestViewServesBoundaries(t *testing.T) {
	v := &View{}
	v.Apply(-1, 14, answer(10, 1000, row(1, 900), row(2, 950)), t0)
	v.Apply(10, 14, answer(12, 1010, row(2, 1005)), t0)
	v.Apply(12, 14, answer(14, 1020, row(3, 1019), row(1, 1018)), t0)
	tests := []struct {
		cursor int64
		ok     bool
		want   []int64
		id     int64
	}{
		{10, true, []int64{1, 2, 3}, 14},
		{12, true, []int64{1, 3}, 14},
		{14, true, nil, 14},
		{11, false, nil, 0},
		{5, false, nil, 0},
	}
	for _, tc := range tests {
		s, ok := v.ServeSince(nil, tc.cursor, t0.Add(time.Second), 10*time.Second)
		if ok != tc.ok {
			t.Fatalf("cursor %d: served %v, want %v", tc.cursor, ok, tc.ok)
		}
		if !ok {
			continue
		}
		got := map[int64]bool{}
		for _, r := range s.Rows {
			got[r.UserID] = true
		}
		if len(got) != len(tc.want) || s.Cursor != tc.id {
			t.Fatalf("cursor %d: rows %v, id %d; want %v, %d", tc.cursor, s.Rows, s.Cursor, tc.want, tc.id)
		}
		for _, id := range tc.want {
			if !got[id] {
				t.Fatalf("cursor %d: row %d missing from %v", tc.cursor, id, s.Rows)
			}
		}
	}
	if _, ok := v.ServeSince(nil, 12, t0.Add(11*time.Second), 10*time.Second); ok {
		t.Fatal("a view older than the staleness bound was served")
	}
	v.Invalidate()
	if _, ok := v.Serve(nil, t0.Add(time.Second), 14, 10*time.Second); ok {
		t.Fatal("an invalidated view was served")
	}
}

// TestViewNarrowsTabAnswers: the answer to a tab's poll forwarded from an
// older cursor repeats rows the view holds; they keep the ids the view
// knew, so every other tab's cursor stays decidable. Rows with new values
// take the ids past the view's cursor; when they do not account for all
// of them, the other rows may hold either, and a tab's answer is refused.
func TestViewNarrowsTabAnswers(t *testing.T) {
	v := &View{}
	v.Apply(-1, 14, answer(10, 1000, row(1, 900), row(2, 950), row(3, 960)), t0)
	v.Apply(10, 14, answer(11, 1010, row(1, 1005)), t0)
	v.Apply(11, 14, answer(12, 1020, row(2, 1019)), t0)
	// A tab at 10 polls; nothing changed since the view's last fetch.
	if !v.ApplyPoll(10, 14, answer(12, 1021, row(1, 1005), row(2, 1019)), t0) {
		t.Fatal("a tab's answer ending at the view's cursor was refused")
	}
	servesExactly(t, v, 11, 12, 2)
	servesExactly(t, v, 10, 12, 1, 2)
	// A tab at 11 polls after row 3 changed (id 13): row 2 kept its id.
	if !v.ApplyPoll(11, 14, answer(13, 1030, row(2, 1019), row(3, 1029)), t0) {
		t.Fatal("a tab's answer whose new rows account for every new id was refused")
	}
	servesExactly(t, v, 12, 13, 3)
	servesExactly(t, v, 11, 13, 2, 3)
	// Two ids past the view's cursor, one row with new values: row 2 or
	// row 3 may have been written again with the same values.
	spread := answer(15, 1040, row(1, 1039), row(2, 1019), row(3, 1029))
	if v.ApplyPoll(11, 14, spread, t0) {
		t.Fatal("a tab's answer that spreads rows over the view's cursor was merged")
	}
	servesExactly(t, v, 12, 13, 3)
	v.Apply(11, 14, spread, t0) // a fetch carrying a write is always merged
	servesExactly(t, v, 11, 15, 1, 2, 3)
	servesExactly(t, v, 15, 15)
	for _, cursor := range []int64{12, 13, 14} {
		if _, ok := v.ServeSince(nil, cursor, t0, time.Minute); ok {
			t.Fatalf("cursor %d served though rows 2 and 3 may lie on either side of it", cursor)
		}
	}
}

// servesExactly checks that the view answers a tab at cursor with the
// rows of users want, at id.
func servesExactly(t *testing.T, v *View, cursor, id int64, want ...int64) {
	t.Helper()
	s, ok := v.ServeSince(nil, cursor, t0, time.Minute)
	if !ok {
		t.Fatalf("cursor %d not served", cursor)
	}
	got := map[int64]bool{}
	for _, r := range s.Rows {
		got[r.UserID] = true
	}
	if len(got) != len(want) || s.Cursor != id {
		t.Fatalf("cursor %d: rows %v, id %d; want %v, %d", cursor, s.Rows, s.Cursor, want, id)
	}
	for _, u := range want {
		if !got[u] {
			t.Fatalf("cursor %d: rows %v, want %v", cursor, s.Rows, want)
		}
	}
}

// TestViewResync: a full fetch keeps what the view knew of rows' ids when
// the rows with new values took every id past its cursor, so tabs go on
// being answered; when some id is unaccounted for (a row written and then
// left out of the answer, having left the window), it starts over. After
// an answer with fewer rows than ids (a deactivated user's write left
// out), values prove nothing until a full fetch starts over.
func TestViewResync(t *testing.T) {
	v := &View{}
	v.Apply(-1, 14, answer(10, 1000, row(1, 900), row(2, 950), row(3, 960)), t0)
	v.Apply(10, 14, answer(11, 1010, row(1, 1005)), t0)
	// The full fetch carries row 2's write, id 12.
	v.Apply(-1, 14, answer(12, 1020, row(1, 1005), row(2, 1019), row(3, 960)), t0)
	servesExactly(t, v, 11, 12, 2)
	servesExactly(t, v, 10, 12, 1, 2)
	// Rows 1 and 3 are written (ids 13, 14), the realm falls quiet past
	// the window, and row 2's write (id 15) carries the next full fetch,
	// which holds row 2 alone.
	v.Apply(-1, 14, answer(15, 3000000, presence.Row{UserID: 2, Presence: presence.Presence{Active: 2999999, Idle: 2999999}}), t0)
	if s, ok := v.ServeSince(nil, 12, t0, time.Minute); ok {
		t.Fatalf("tab at 12 answered %+v, though rows 1 and 3 took ids the view never saw", s)
	}
}

// TestViewDistrustsValuesAfterHiddenIDs: once an answer had fewer rows
// than ids (a deactivated user's write is left out), a row's new values
// no longer prove a new id: the user may come back with the row the view
// never saw.
func TestViewDistrustsValuesAfterHiddenIDs(t *testing.T) {
	v := &View{}
	v.Apply(-1, 14, answer(10, 1000, row(1, 900), row(2, 950), row(3, 960)), t0)
	// Id 11 went to user 1, deactivated; id 12 to row 3.
	v.Apply(10, 14, answer(12, 1010, row(3, 970)), t0)
	// User 1 is back; id 13 went to another deactivated user. Row 1's
	// values are new to the view, one row for one new id, yet its id is
	// 11, and a tab at 12 must not get it.
	v.Apply(-1, 14, answer(13, 1020, row(1, 1100), row(2, 950), row(3, 970)), t0)
	if s, ok := v.ServeSince(nil, 12, t0, time.Minute); ok {
		t.Fatalf("tab at 12 answered %+v, though row 1's id is 11", s)
	}
}
