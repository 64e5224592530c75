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

// RowMirror mirrors what the server said of a user's presence row: lower bounds
// on the stored last_connected_time and last_active_time, in the server's
// clock. They come only from the server's own answers (the row read with
// GET /users/{id}/presence, or the user's entry in a presence answer),
// never from the proxy's guess of which writes Zulip stored.
//
// Lower bounds stay right whoever else writes the row: other Caddy
// instances, clients talking to Zulip directly, or Zulip itself when the
// user turns invisible mode off (zerver/actions/user_settings.py writes the
// row at that instant). Stored times only move forward while the user is
// visible; turning invisible mode on moves them back, but an invisible
// user's writes are never stored, so a ping the bounds call a no-op is one.
type RowMirror struct {
	stored    lease // the store's
	mu        sync.Mutex
	connected time.Time     // lower bound on last_connected_time; zero: none
	active    time.Time     // lower bound on last_active_time; zero: none
	read      bool          // the server's answer to a read was applied once
	stale     bool          // a write of the user reached the server since
	accepted  bool          // the server accepted a write of the user
	failedAt  time.Time     // proxy clock: when the last read failed
	userID    int64         // the user's id, once the server told it
	joined    time.Time     // the user's date_joined, which stands in for NULL
	joinedTo  time.Duration // date_joined lies in [joined, joined+joinedTo)
	budget    Budget        // the user's rate limit, as far as seen

	// Reading is held by the request reading the row from the server.
	Reading Flight
}

// rowCost is the memory of a RowMirror, ristretto's entry for it included (see
// TestCostsMatchHeap).
const rowCost = 420

// WriteIsNoOp reports whether the server would surely change nothing for w when
// its clock reads at most serverNow: each stored time it would compare is
// at least its lower bound, so within the window (Zulip writes only when a
// stored time is more than 55 s old, comparing with >).
func (r *RowMirror) WriteIsNoOp(serverNow time.Time, w Write, window time.Duration) bool {
	if window <= 0 {
		// PRESENCE_UPDATE_MIN_FREQ_SECONDS 0: Zulip stores every write.
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !within(r.connected, serverNow, window) {
		return false
	}
	return !w.Active || within(r.active, serverNow, window)
}

func within(lo, now time.Time, window time.Duration) bool {
	return !lo.IsZero() && now.Sub(lo) <= window
}

// NeedsRead reports whether reading the row from the server may let a ping
// be answered locally: the row was never read, or a write reached the
// server since it was. After a failed read it waits a window before trying
// again, so that a broken upstream does not double every ping.
func (r *RowMirror) NeedsRead(now time.Time, window time.Duration) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.read && !r.stale {
		return false
	}
	return r.failedAt.IsZero() || now.Sub(r.failedAt) > window
}

// StartRead records that a read of the row is being sent. Writes that
// reach the server from now on make the row stale again.
func (r *RowMirror) StartRead() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stale = false
}

// FailRead records that the read started at now did not tell the row.
func (r *RowMirror) FailRead(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stale, r.failedAt = true, now
}

// Wrote records that a write of the user reached the server, which may
// have moved the row past what the proxy read.
func (r *RowMirror) Wrote() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stale, r.accepted = true, true
}

// UserID returns the user's id, or 0 if it is not known yet.
func (r *RowMirror) UserID() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.userID
}

// SetUser records the user's id and date_joined, as the server told them:
// the date lies in [joined, joined+precision). Zulip 10.0 and later send it
// to the minute (precision one minute); earlier versions to the second or
// microsecond. A zero joined means the server did not tell it.
func (r *RowMirror) SetUser(id int64, joined time.Time, precision time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.userID, r.joined, r.joinedTo = id, joined, max(precision, time.Nanosecond)
}

// ReadRow applies the answer to a read of the row, one that tells it as of
// after every write that reached the server before StartRead: its
// active_timestamp and idle_timestamp (whole seconds, so the stored times
// lie at or after them).
func (r *RowMirror) ReadRow(active, idle int64) { r.observe(true, active, idle, true) }

// ReadNoRow applies the answer to a read that found no row: the next write
// creates it, and the bounds stay as they are.
func (r *RowMirror) ReadNoRow() { r.observe(false, 0, 0, true) }

// SawRow applies the row's timestamps as some other answer showed them,
// which may be older than the latest write: they only raise the bounds.
func (r *RowMirror) SawRow(active, idle int64) { r.observe(true, active, idle, false) }

func (r *RowMirror) observe(exists bool, active, idle int64, read bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if read {
		r.read, r.failedAt = true, time.Time{}
	}
	if !exists {
		return
	}
	r.connected = later(r.connected, r.lowerBound(idle))
	r.active = later(r.active, r.lowerBound(active))
}

// ObserveLegacy applies a one-user read in the legacy shape, which every
// released Zulip answers: status "active" with int(last_active_time), or
// "idle" with int(last_connected_time). Zulip keeps last_connected_time at
// or after last_active_time whenever it writes, so an "active" timestamp
// bounds both, once a write of the user was accepted: before that,
// last_connected_time may still be NULL (rows from before Zulip 7.0),
// which the write rule counts as a day old. An invisible user's writes
// are no-ops, and turning invisible mode off writes the row, so an
// accepted write makes it non-NULL wherever it matters.
func (r *RowMirror) ObserveLegacy(active bool, timestamp int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.read, r.failedAt = true, time.Time{}
	bound := r.lowerBound(timestamp)
	if active {
		r.active = later(r.active, bound)
	}
	if !active || r.accepted {
		r.connected = later(r.connected, bound)
	}
}

// lowerBound turns a timestamp the server sent into a lower bound on the
// stored time. Zulip sends the user's date_joined, in whole seconds, where
// the stored time is NULL (never written), which its write rule treats as
// a day old: a value that may be date_joined, or any value while
// date_joined is unknown, bounds nothing. With date_joined known only to
// the minute, that is every second of its minute; only a user whose first
// write fell within the minute it joined loses a local answer by it.
func (r *RowMirror) lowerBound(sec int64) time.Time {
	if r.joined.IsZero() {
		return time.Time{}
	}
	if sec >= r.joined.Unix() && sec <= r.joined.Add(r.joinedTo-time.Nanosecond).Unix() {
		return time.Time{}
	}
	return time.Unix(sec, 0)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// ObserveRate records the X-RateLimit-Remaining of an answer Zulip gave
// the user at the proxy's time at.
func (r *RowMirror) ObserveRate(remaining int, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.budget.observe(remaining, at)
}

// SavedRequest records a request of the user's answered without the
// server at now: one the user's rate limit did not count.
func (r *RowMirror) SavedRequest(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.budget.save(now)
}

// RateKnown reports whether the proxy has seen, within the last window,
// what Zulip reported left of the user's rate limit.
func (r *RowMirror) RateKnown(now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.budget.known(now)
}

// SpendRequest reports whether the proxy may spend one of the user's
// requests at now on a request of its own (design §7.6), and records it.
func (r *RowMirror) SpendRequest(now time.Time, p RatePolicy) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.budget.spend(now, p)
}

// Bounds are the lower bounds a RowMirror holds on the stored times, in
// the server's clock; a zero time is none.
type Bounds struct {
	Connected, Active time.Time
}

// Bounds returns the mirror's lower bounds, which a ping answered locally
// rests on.
func (r *RowMirror) Bounds() Bounds {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Bounds{Connected: r.connected, Active: r.active}
}
