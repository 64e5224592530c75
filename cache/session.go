package cache

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// Session is the state kept for one set of credentials.
type Session struct {
	mu        sync.Mutex
	trustedAt time.Time     // when the write of the last success was sent
	inputAt   time.Time     // last forwarded new_user_input=true
	inflight  chan struct{} // closed when the last pending forward settles
	pending   int

	user UserKey // whose presence row the session writes; set by Bind

	// budget is the rate limit of the session's user before the proxy
	// knows who that is (a browser session before GET /users/me).
	budget Budget
	// pingHeader is the header template of the server's latest answer to
	// the session's own forwarded ping, interned per host; nil: none yet.
	pingHeader *PingHeader

	// Profile is held by the request asking the server whose session this
	// is (GET /json/users/me), so that a burst asks once.
	Profile Flight

	// convMu is held across a conversion's upstream call, so that two polls
	// of one session never interleave their cursor updates.
	convMu sync.Mutex
	conv   Conversion
	cost   atomic.Int64 // bytes, for ristretto; updated after each conversion
	stored lease        // the store's
}

// Conversion is one session's picture of its realm's presence, built from
// a full fetch and the deltas the session fetched since.
type Conversion struct {
	// Snapshot holds the rows, user id → timestamps.
	Snapshot presence.Snapshot
	// Cursor is the presence_last_update_id of the last merged answer.
	Cursor int64
	// Synced is true once Snapshot holds a full fetch.
	Synced bool
	// Days is the history window of that full fetch.
	Days int64
	// SyncedAt is when that full fetch was made.
	SyncedAt time.Time
	// SyncedServerTS is that full fetch's server_timestamp, the server's
	// clock; 0 when Snapshot holds none.
	SyncedServerTS float64
}

// Bind records the user the session's credentials belong to. It must be
// called before any of the session's writes is forwarded, so that the
// user's row sees them all.
func (s *Session) Bind(u UserKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.user = u
}

// User returns the user bound to the session, or "" if none is yet.
func (s *Session) User() UserKey {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.user
}

// sessionBaseCost is the memory of a Session without its snapshot rows,
// ristretto's entry for it included (see TestCostsMatchHeap).
const sessionBaseCost = 500

// LockConversion locks and returns the session's conversion state. The
// caller must call UnlockConversion.
func (s *Session) LockConversion() *Conversion {
	s.convMu.Lock()
	return &s.conv
}

// UnlockConversion records the conversion's new memory cost and releases
// the conversion state.
func (s *Session) UnlockConversion() {
	s.cost.Store(sessionBaseCost + s.conv.Snapshot.SizeBytes())
	s.convMu.Unlock()
}

// NeedsFullFetch reports whether the next poll must rebuild the snapshot:
// deltas never report deactivations, visibility or window changes, so the
// snapshot is rebuilt every resync interval, and whenever the client asks
// for a wider window than the snapshot was fetched with.
func (c *Conversion) NeedsFullFetch(now time.Time, days int64, resync time.Duration) bool {
	return !c.Synced || days > c.Days || now.Sub(c.SyncedAt) >= resync
}

// Reset forgets the snapshot, so that the next poll makes a full fetch.
func (c *Conversion) Reset() {
	*c = Conversion{}
}

// ObserveRate records the X-RateLimit-Remaining of an answer Zulip gave
// the session at the proxy's time at.
func (s *Session) ObserveRate(remaining int, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.budget.observe(remaining, at)
}

// SpendRequest is RowMirror.SpendRequest for a session whose user is not
// known yet.
func (s *Session) SpendRequest(now time.Time, p RatePolicy) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.budget.spend(now, p)
}

// SetPingHeader keeps the header template of the server's latest answer
// to one of the session's requests (Host.InternPingHeader), for the
// session's pings answered locally.
func (s *Session) SetPingHeader(p *PingHeader) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pingHeader = p
}

// PingHeader returns the template kept by SetPingHeader, nil if none.
func (s *Session) PingHeader() *PingHeader {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pingHeader
}
