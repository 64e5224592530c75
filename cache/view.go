package cache

import (
	"math"
	"sync"
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
	syncedTS float64   // its server_timestamp
	// lastSyncID is the id the last full fetch answered.
	lastSyncID int64
	// unseen are the intervals of ids that, since the last full fetch,
	// may belong to a row no answer showed: a fetch answered fewer rows
	// than ids in them. Most such ids are gaps (Zulip's sequence skips an
	// id when two first writes race, and bots' writes, which realm reads
	// never show, take ids from it), but one may be a deactivated user's
	// write: that user's row in the view may be older than the cursor,
	// and should the user come back, the row's values no longer tell
	// whether it took a new id past the view's cursor or one in these
	// intervals (see narrow). At most maxUnseen; more are joined into one.
	unseen   []idRange
	mergedAt time.Time // proxy clock: when a fetch was last merged
	serverTS float64   // server_timestamp of the answer last merged

	// For each row a fetch returned since spanStart, the interval its id
	// lies in; every other row's id is at most spanStart. A full fetch
	// starts over, or (see resync) moves spanStart to the previous full
	// fetch's id, so that they cover at most two resync_intervals.
	spanStart int64
	changed   map[int64]idRange
	scratch   []idRange // narrow's, reused

	// Resync is held by the request making the host's full fetch, so
	// that a burst of writes makes one.
	Resync Flight

	stored lease // the store's
}

// idRange is an interval (lo, hi] of presence update ids.
type idRange struct{ lo, hi int64 }

// maxUnseen bounds View.unseen: past it the intervals are joined into
// one that covers them all, which can only make narrow place fewer rows.
const maxUnseen = 16

// addUnseen records that ids in (lo, hi] may belong to rows no answer
// showed.
func (v *View) addUnseen(lo, hi int64) {
	if len(v.unseen) >= maxUnseen {
		all := idRange{lo: lo, hi: hi}
		for _, u := range v.unseen {
			all.lo, all.hi = min(all.lo, u.lo), max(all.hi, u.hi)
		}
		v.unseen = append(v.unseen[:0], all)
		return
	}
	v.unseen = append(v.unseen, idRange{lo: lo, hi: hi})
}

// unseenAbove returns the lowest id above floor that an unseen interval
// holds ids in (floor, view cursor] from, and whether there is one: a
// row that changed after floor without the view seeing it may hold one.
func (v *View) unseenAbove(floor int64) (int64, bool) {
	lo, ok := int64(math.MaxInt64), false
	for _, u := range v.unseen {
		if u.hi > floor && u.lo < v.cursor {
			lo, ok = min(lo, max(u.lo, floor)), true
		}
	}
	return lo, ok
}

// viewBaseCost is the memory of a View without its rows, ristretto's
// entry included.
const viewBaseCost = 512

// FetchDays is the window a full fetch for a poll of days asks for: the
// widest the view has held. Fetching alternately narrower and wider would
// bring rows the view never held, and every full fetch would start its
// intervals over.
func (v *View) FetchDays(days int64) int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return max(days, v.days)
}

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
func (v *View) Apply(cursor, days int64, ans presence.Decoded, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.apply(cursor, days, ans, now, false)
}

// ApplyPoll is Apply for the answer to a web app tab's poll forwarded as
// it came, which is merged only when the view can tell, for each of its
// rows, on which side of its own cursor the row's id lies (see
// narrow). Otherwise merging would spread some rows' ids over other tabs'
// cursors, which the view could then no longer answer; it loses nothing by
// refusing, since its next fetch brings what changed past its cursor. A
// fetch carrying a write cannot be refused: its answer must show the
// writer's own row.
func (v *View) ApplyPoll(cursor, days int64, ans presence.Decoded, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.apply(cursor, days, ans, now, true)
}

func (v *View) apply(cursor, days int64, ans presence.Decoded, now time.Time, poll bool) bool {
	m := ans.LastUpdateID
	switch {
	case cursor < 0 && (!v.synced || m >= v.cursor):
		// A full fetch; one that found no row (an empty realm, or realm
		// presence disabled, which answers {} and -1) leaves the view at
		// -1, from where every fetch is a full one again.
		if !v.synced || !v.resync(m, ans.Rows) {
			v.spanStart, v.changed = m, map[int64]idRange{}
		}
		v.unseen = v.unseen[:0] // every row shown is held as of m
		v.snap.Replace(ans.Rows)
		v.synced, v.days, v.syncedAt, v.lastSyncID, v.syncedTS = true, days, now, m, ans.ServerTimestamp
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
		ranges, spread, exact := v.narrow(cursor, m, ans.Rows)
		if poll && spread {
			return false
		}
		// Fewer rows than ids: some may be hidden.
		switch {
		case cursor == v.cursor && int64(len(ans.Rows)) < m-cursor:
			v.addUnseen(cursor, m)
		case cursor < v.cursor && m > v.cursor && !exact:
			v.addUnseen(v.cursor, m)
		}
		for i, r := range ans.Rows {
			v.changed[r.UserID] = ranges[i]
		}
		v.snap.Merge(ans.Rows)
	}
	v.cursor, v.mergedAt, v.serverTS = m, now, ans.ServerTimestamp
	return true
}

// resync keeps the intervals across a full fetch answering m, when the
// view can tell which rows changed past its cursor (see narrow): web app
// tabs go on being answered. Intervals from before the previous full
// fetch are dropped.
func (v *View) resync(m int64, rows []presence.Row) bool {
	start := max(v.spanStart, v.lastSyncID)
	fetched := make(map[int64]struct{}, len(rows))
	for _, r := range rows {
		fetched[r.UserID] = struct{}{}
	}
	for id, r := range v.changed {
		if _, ok := fetched[id]; !ok && r.hi > start {
			// A row that changed since start left the answer: its user
			// was deactivated, or it left the window, and a tab's
			// incremental poll still gets a row, whatever its age.
			return false
		}
	}
	// Every id past the view's cursor must be one a fetched row took: a
	// row written since and then left out (deactivated, or out of the
	// window by now) would be missing from tabs' answers.
	ranges, spread, exact := v.narrow(math.MinInt64, m, rows)
	if spread || !exact {
		return false
	}
	changed := make(map[int64]idRange, len(rows))
	for i, r := range rows {
		if ranges[i].hi > start {
			changed[r.UserID] = ranges[i]
		}
	}
	v.spanStart, v.changed = start, changed
	return true
}

// narrow returns, for each row of the answer m to a fetch at cursor (a
// full fetch: math.MinInt64), the interval its id lies in, given what the
// view knew before the merge, and whether some interval spreads over ids
// the view cannot decide between.
//
// A delta alone says (cursor, m]. A fetch from the view's own cursor can
// say no more, and needs no more. One from an older cursor (a web app
// tab's, forwarded as it came), or a full fetch, also returns rows the
// view already holds. A row certainly holds a new id, in (view cursor, m],
// when the view last saw it change at or before cursor, or holds other
// values for it (a row's values change only by writes, each of which
// takes the next id). Each of those rows holds an id of its own, so when
// they are as many as the ids past the view's cursor, every id there is
// one of theirs (there was no gap), and every other row kept the id the
// view knew. Otherwise (a gap, a row written twice, or rewritten with the
// same values to the second, such as by invisible mode) the other rows
// may hold either and spread over both. So does a row the view does not
// hold (a new row, or a reactivated user's old one).
//
// A row's values tell that it took a new id only while the view holds
// every row as of its cursor. An answer with fewer rows than ids may have
// left out a deactivated user's write, and the user may come back with
// that row, whose id the view's cursor has passed: it lies in an unseen
// interval, above the last change of the row the view saw and above the
// fetch's cursor (the fetch returned it). So a row counts as moved past
// the view's cursor only when no unseen interval holds ids between those
// and the view's cursor; any other such row spreads from the lowest of
// them to m, and is not counted. Gaps, most of the unseen ids, then cost
// only the rows that changed since one, not every row until the next full
// fetch.
func (v *View) narrow(cursor, m int64, rows []presence.Row) (ranges []idRange, spread, exact bool) {
	ranges = v.scratch[:0]
	moved := int64(0)
	for _, r := range rows {
		known, ok := v.changed[r.UserID]
		if !ok {
			known = idRange{lo: math.MinInt64, hi: v.spanStart}
		}
		held, ok := v.snap.Get(r.UserID)
		switch {
		case known.hi <= cursor || (ok && held != r.Presence):
			if lo, hidden := v.unseenAbove(max(cursor, known.hi)); hidden {
				ranges = append(ranges, idRange{lo: lo, hi: m})
				spread = true
				continue
			}
			ranges = append(ranges, idRange{lo: v.cursor, hi: m})
			moved++
		case !ok:
			ranges = append(ranges, idRange{lo: cursor, hi: m})
			spread = true
		default:
			ranges = append(ranges, idRange{lo: max(known.lo, cursor), hi: known.hi})
		}
	}
	exact = moved == m-v.cursor
	for i, r := range ranges {
		switch {
		case r.lo >= r.hi:
			// The answer disagrees with what the view knew (it missed
			// a change): only what the fetch itself says holds.
			ranges[i] = idRange{lo: cursor, hi: m}
			spread = spread || cursor < v.cursor
		case !exact && r.hi <= v.cursor && m > v.cursor:
			ranges[i].hi = m
			spread = true
		}
	}
	v.scratch = ranges
	return ranges, spread, exact
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
	// Synced is the server_timestamp of the view's last full fetch.
	Synced float64
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
	return Served{Rows: append(rows, v.snap.Rows()...), Cursor: v.cursor, ServerTimestamp: v.serverTS, Age: age, Synced: v.syncedTS}, true
}

// ServeSince appends the rows whose id is above cursor, as a web app tab
// polling with last_update_id=cursor gets them, and reports the answer's
// presence_last_update_id, or false when the view cannot tell exactly:
// cursor lies outside (spanStart, view cursor], a row's id may lie on
// either side of it, or the view merged nothing within staleness.
//
// The view covers every change from spanStart to its cursor, since a
// fetch is merged only when it starts at or below the view's cursor; so
// any cursor in between is decided by the rows' intervals.
func (v *View) ServeSince(rows []presence.Row, cursor int64, now time.Time, staleness time.Duration) (Served, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	age := now.Sub(v.mergedAt)
	if !v.spans(cursor) || age > staleness {
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
		// The view's cursor is the id of the newest row it holds: the
		// highest id of the rows the last merged fetch returned.
		id = v.cursor
	}
	return Served{Rows: rows, Cursor: id, ServerTimestamp: v.serverTS, Age: age, Synced: v.syncedTS}, true
}

// Decides reports whether ServeSince can answer a tab at cursor, however
// long ago the view merged: the cursor lies in the span the view covers,
// and no row's id may lie on either side of it.
func (v *View) Decides(cursor int64) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.spans(cursor) {
		return false
	}
	for _, r := range v.changed {
		if r.lo < cursor && cursor < r.hi {
			return false
		}
	}
	return true
}

// spans reports whether cursor lies in (spanStart, cursor] of a synced
// view, the ids whose changes it holds.
func (v *View) spans(cursor int64) bool {
	return v.synced && cursor >= v.spanStart && cursor <= v.cursor
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
	return v.costLocked()
}

// intervalCost is the memory of one row's entry in View.changed, the
// map's overhead and narrow's scratch included.
const intervalCost = 48

func (v *View) costLocked() int64 {
	return viewBaseCost + v.snap.SizeBytes() + int64(len(v.changed)+cap(v.scratch)/2)*intervalCost
}

func (v *View) info(host string) ViewInfo {
	v.mu.Lock()
	defer v.mu.Unlock()
	return ViewInfo{Host: host, Rows: v.snap.Len(), Bytes: v.costLocked(), Cursor: v.cursor}
}
