package cache

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// View is one host's picture of its realm's presence rows in shared mode,
// fed by the fetches that carry eligible sessions' writes and served to
// every eligible session of the host.
//
// A fetch at cursor c answered with id m returns every row changed in
// (c, m] with its values as of m, and ids become visible in commit order,
// so merges are monotone: an answer older than the view's cursor changes
// nothing, and the cursor moves to m only when the view covered c.
type View struct {
	mu       sync.Mutex
	snap     presence.Snapshot
	cursor   int64     // the view holds every change up to this id
	synced   bool      // a full fetch was merged, and nothing since undid it
	days     int64     // the window of that full fetch
	syncedAt time.Time // proxy clock: when it was made
	mergedAt time.Time // proxy clock: when a fetch was last merged
	serverTS float64   // server_timestamp of the answer last merged

	// Since the last full fetch, which answered spanStart: the ids fetches
	// started from or answered (boundaries), and for each row a fetch
	// returned, the interval its id lies in. Every other row's id is at
	// most spanStart. Both are reset by each full fetch, so they hold at
	// most resync_interval of changes.
	spanStart  int64
	boundaries map[int64]struct{}
	changed    map[int64]idRange

	// Resync is held by the request making the host's full fetch, so
	// that a burst of writes makes one.
	Resync Flight

	storedCost atomic.Int64 // the cost ristretto was last given
	storedAt   atomic.Int64 // when, in Unix nanoseconds of the real clock
}

// idRange is an interval (lo, hi] of presence update ids.
type idRange struct{ lo, hi int64 }

// viewBaseCost is the memory of a View without its rows, ristretto's
// entry included.
const viewBaseCost = 512

// Cursor returns the id fetches should start from, and false when the
// view needs a full fetch: it was never synced, the last full fetch is
// older than resync, or it covers a narrower window than days.
func (v *View) Cursor(now time.Time, days int64, resync time.Duration) (int64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.synced || now.Sub(v.syncedAt) >= resync || days > v.days {
		return -1, false
	}
	return v.cursor, true
}

// Apply merges the answer to a fetch made at cursor (negative for a full
// fetch of days) and returns whether the view holds it. An answer whose id went
// back below the cursor it was asked from (realm presence disabled, a
// restored database) resets the view: the next fetch is a full one.
func (v *View) Apply(cursor, days int64, ans presence.Response, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	m := ans.LastUpdateID
	switch {
	case cursor < 0 && (!v.synced || m >= v.cursor):
		// A full fetch; one that found no row (an empty realm, or realm
		// presence disabled, which answers {} and -1) leaves the view at
		// -1, from where every fetch is a full one again.
		v.snap.Replace(ans.Rows)
		v.synced, v.days, v.syncedAt = true, days, now
		v.spanStart, v.boundaries, v.changed = m, map[int64]struct{}{m: {}}, map[int64]idRange{}
	case cursor < 0 || m < cursor:
		v.synced = false
		return false
	case !v.synced || m < v.cursor:
		return false // older than what the view holds
	case cursor > v.cursor:
		// The view lacks (v.cursor, cursor]: merging these rows would
		// put rows newer than its instant beside older ones. The next
		// fetch at the view's cursor brings them all.
		return false
	default:
		v.snap.Merge(ans.Rows)
		for _, r := range ans.Rows {
			v.changed[r.UserID] = idRange{lo: cursor, hi: m}
		}
		v.boundaries[m] = struct{}{}
		v.boundaries[cursor] = struct{}{}
	}
	v.cursor, v.mergedAt, v.serverTS = m, now, ans.ServerTimestamp
	return true
}

// Synced reports whether the view holds a full fetch.
func (v *View) Synced() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.synced
}

// Invalidate records that a write reached the server without feeding the
// view: it answers no poll until a fetch merges again.
func (v *View) Invalidate() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.mergedAt = time.Time{}
}

// Served is what a poll answered from the view gets.
type Served struct {
	// Rows are the view's rows; the slice is the caller's.
	Rows []presence.Row
	// Cursor is the id the rows stand at.
	Cursor int64
	// ServerTimestamp is the server's clock when the view last merged.
	ServerTimestamp float64
	// Age is how long ago that was, by the proxy's clock.
	Age time.Duration
}

// Serve appends the view's rows to rows and reports what they stand for,
// or false when the view may not answer a poll of days at now: it is not
// synced, does not cover the window, or merged nothing within staleness.
func (v *View) Serve(rows []presence.Row, now time.Time, days int64, staleness time.Duration) (Served, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	age := now.Sub(v.mergedAt)
	if !v.synced || days > v.days || age > staleness {
		return Served{}, false
	}
	return Served{Rows: append(rows, v.snap.Rows()...), Cursor: v.cursor, ServerTimestamp: v.serverTS, Age: age}, true
}

// ServeSince appends the rows whose id is above cursor, as a web app tab
// polling with last_update_id=cursor gets them, and reports the answer's
// presence_last_update_id, or false when the view cannot tell exactly:
// cursor is not a boundary of its fetches, a row's id may lie on either
// side of it, or the view merged nothing within staleness.
func (v *View) ServeSince(rows []presence.Row, cursor int64, now time.Time, staleness time.Duration) (Served, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	age := now.Sub(v.mergedAt)
	if _, boundary := v.boundaries[cursor]; !v.synced || !boundary || cursor < v.spanStart || age > staleness {
		return Served{}, false
	}
	n := len(rows)
	for id, r := range v.changed {
		switch {
		case r.hi <= cursor:
		case r.lo >= cursor:
			if p, ok := v.snap.Get(id); ok {
				rows = append(rows, presence.Row{UserID: id, Presence: p})
			}
		default:
			return Served{Rows: rows[:n]}, false
		}
	}
	id := cursor // Zulip echoes the cursor when no row changed
	if len(rows) > n {
		// The view's cursor is the id of the last row a fetch returned.
		id = v.cursor
	}
	return Served{Rows: rows, Cursor: id, ServerTimestamp: v.serverTS, Age: age}, true
}

// Row returns the view's row of a user, if it holds one.
func (v *View) Row(userID int64) (presence.Presence, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.snap.Get(userID)
}

// cost is the view's memory in bytes.
func (v *View) cost() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return viewBaseCost + v.snap.SizeBytes()
}

func (v *View) info(host string) ViewInfo {
	v.mu.Lock()
	defer v.mu.Unlock()
	return ViewInfo{Host: host, Rows: v.snap.Len(), Bytes: viewBaseCost + v.snap.SizeBytes(), Cursor: v.cursor}
}
