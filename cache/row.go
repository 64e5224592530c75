package cache

import (
	"sync"
	"time"
)

// UserKey names one user of one host. Zulip's 55-second rule applies to
// the user's single presence row, which all of the user's sessions (phone,
// browser, terminal) write to, so the gate decides per user, not per
// session. Like session keys it is an HMAC, so no email is stored.
type UserKey string

// bounds are what the proxy knows of one timestamp Zulip stores: it lies
// in [lo, hi]. A zero lo means no lower bound is known.
type bounds struct {
	lo, hi time.Time
}

// quiet reports whether a write at now is surely a no-op: the stored time
// is surely within the window (Zulip writes only when it is more than 55 s
// old, comparing with >).
func (b bounds) quiet(now time.Time, window time.Duration) bool {
	return !b.lo.IsZero() && now.Sub(b.lo) <= window
}

// apply records a write attempt at t that reached the server, and reports
// whether it surely wrote. When the proxy cannot tell whether it wrote,
// the stored time lies between the older bound and t.
func (b *bounds) apply(t time.Time, window time.Duration) (surely, maybe bool) {
	switch {
	case t.Sub(b.hi) > window:
		b.lo, b.hi = t, t
		return true, true
	case b.quiet(t, window):
		return false, false
	}
	b.lo = later(b.lo, t.Add(-window))
	b.hi = later(b.hi, t)
	return false, true
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// Row mirrors a user's presence row on the server: bounds on
// last_connected_time and last_active_time, moved exactly as Zulip moves
// them (zerver/actions/presence.py) by every write of the user's sessions
// that the server confirmed.
type Row struct {
	mu        sync.Mutex
	connected bounds
	active    bounds
	known     bool      // the bounds are tight enough to decide on
	learnedAt time.Time // when the server was last asked for the row
	userID    int64     // the user's id, once the server told it
	joined    time.Time // the user's date_joined, which stands in for NULL
}

// newRow starts a mirror knowing only that nothing was stored after now.
func newRow(now time.Time) *Row {
	return &Row{connected: bounds{hi: now}, active: bounds{hi: now}}
}

// NeedsLearning reports whether the row should be read from the server
// before deciding: writes alone cannot tell a mirror that started blind,
// or lost track after an error, in which phase Zulip's 55-second rule
// stores them. It asks at most once per window.
func (r *Row) NeedsLearning(now time.Time, window time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.known && (r.learnedAt.IsZero() || now.Sub(r.learnedAt) > window)
}

// UserID returns the user's id, or 0 if it is not known yet.
func (r *Row) UserID() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.userID
}

// SetUser records the user's id and date_joined, as the server told them.
func (r *Row) SetUser(id int64, joined time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.userID, r.joined = id, joined
}

// Learn sets the row from what the server answered at now: the user's
// active_timestamp and idle_timestamp (whole seconds, so the stored times
// lie within the second after them), or no row at all (exists false),
// which Zulip treats as a write due. Learning failed when ok is false.
func (r *Row) Learn(now time.Time, ok, exists bool, active, idle int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.learnedAt = now
	if !ok {
		return
	}
	r.known = true
	if !exists {
		r.connected, r.active = bounds{}, bounds{}
		return
	}
	r.connected = r.learned(idle, now)
	r.active = r.learned(active, now)
}

// learned turns a timestamp the server sent into bounds. Zulip sends the
// user's date_joined where the stored time is NULL (never written), which
// its write rule treats as a day old: such a value, or any value when
// date_joined is unknown, gives no lower bound, so the next write is not
// taken for a no-op.
func (r *Row) learned(sec int64, now time.Time) bounds {
	b := secondOf(sec, now)
	if r.joined.IsZero() || sec == r.joined.Unix() {
		b.lo = time.Time{}
	}
	return b
}

// secondOf is the second a whole-second timestamp truncated, bounded by now.
func secondOf(sec int64, now time.Time) bounds {
	lo := time.Unix(sec, 0)
	hi := lo.Add(time.Second)
	if hi.After(now) {
		hi = now
	}
	return bounds{lo: lo, hi: hi}
}

// quiet reports whether the server would surely change nothing for w at now.
func (r *Row) quiet(now time.Time, w Write, window time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.connected.quiet(now, window) {
		return false
	}
	return !w.Active || r.active.quiet(now, window)
}

// confirm applies a write made at t that the server answered with a 2xx.
func (r *Row) confirm(t time.Time, w Write, window time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	surely, maybe := r.connected.apply(t, window)
	unsure := maybe && !surely
	if w.Active {
		// An active write also moves last_connected_time, keeping it ≥ active.
		switch surely, maybe := r.active.apply(t, window); {
		case surely:
			r.connected = bounds{lo: t, hi: t}
		case maybe:
			r.connected.hi = later(r.connected.hi, t)
			unsure = true
		}
	}
	if unsure {
		r.known = false
	}
}

// Unsure records a write made at t whose outcome is unknown: a 5xx, a
// transport error, or a request the proxy passed through without reading.
// It may have been stored, so t becomes a possible value.
func (r *Row) Unsure(t time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.connected.hi = later(r.connected.hi, t)
	r.active.hi = later(r.active.hi, t)
	r.known = false
}
