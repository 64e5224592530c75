package cache

import (
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

func answer(id int64, ts float64, rows ...presence.Row) presence.Response {
	return presence.Response{Rows: rows, ServerTimestamp: ts, HasLastUpdateID: true, LastUpdateID: id}
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
