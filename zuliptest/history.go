package zuliptest

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"time"
)

// A realm remembers how its presence rows and its users' activity changed,
// so that tests can check an answer that may be some seconds old (a proxy
// answering from a shared, slightly stale view of the realm) against what
// the server would have answered back then: see RenderAsOf.
//
// Positions in the past are named by update ID. Every change of a row
// takes the realm's next update ID (PresenceSequence), so "as of ID n" is
// the realm after ID n was assigned and before ID n+1 was: the rows as
// they stood right after change n, and each user's active flag as it
// stood just before change n+1 (or now, when n is the last ID).
// Deactivation and reactivation take no ID, so they are placed by the ID
// that was the realm's last when they happened.

// The default limits of a realm's history.
const (
	// DefaultHistorySpan is how much server time a realm's history covers.
	DefaultHistorySpan = time.Hour
	// DefaultHistoryMaxChanges is how many row changes a realm's history
	// keeps at most: 46 MB of them, an hour of 8,700 users writing every
	// minute.
	DefaultHistoryMaxChanges = 1 << 19
)

// ErrHistoryTrimmed is the error of an as-of query about a moment older
// than the realm's history still covers.
var ErrHistoryTrimmed = errors.New("zuliptest: presence history no longer covers that moment")

// HistoryLimits bound the memory of a realm's history. A row change is
// dropped, oldest first, once it is more than Span of server time older
// than the realm's newest row change, or once more than MaxChanges newer
// ones are kept; the same count bounds the separate record of user
// (de)activations. Row changes take 88 bytes each in a ring buffer that
// grows as they come and never past MaxChanges+1 entries, so a realm holds
// what its users wrote in the last Span and at most about MaxChanges × 88
// bytes (46 MB at the default), plus 32 bytes for each user's current row.
// Nothing is dropped while nothing is written, so the history then keeps
// covering the last changes.
type HistoryLimits struct {
	// Span is the server time the history covers at least, counted back
	// from the newest row change; zero or less means DefaultHistorySpan.
	Span time.Duration
	// MaxChanges is the most row changes kept; zero or less means
	// DefaultHistoryMaxChanges.
	MaxChanges int
}

func (l HistoryLimits) withDefaults() HistoryLimits {
	if l.Span <= 0 {
		l.Span = DefaultHistorySpan
	}
	if l.MaxChanges <= 0 {
		l.MaxChanges = DefaultHistoryMaxChanges
	}
	return l
}

// RowChange is one change of a user's presence row.
type RowChange struct {
	// UpdateID is the PresenceSequence value the change took.
	UpdateID int64
	// UserID is the row's user.
	UserID int64
	// Before is the row before the change; Exists is false if the change
	// created the row.
	Before Row
	// After is the row after the change; Exists is false if the change
	// deleted it.
	After Row
	// At is the realm's clock when the change was made.
	At time.Time
}

// nullMicro stands for a NULL time in a rowImage.
const nullMicro = math.MinInt64

// rowImage is a presence row as the history keeps it, in less memory than
// a presenceRow: times are Unix microseconds, which is all the precision
// a stored row has.
type rowImage struct {
	connected, active int64 // nullMicro is NULL
	updateID          int64
	exists            bool
}

func imageOf(row *presenceRow) rowImage {
	if row == nil {
		return rowImage{}
	}
	return rowImage{connected: toMicro(row.connected), active: toMicro(row.active), updateID: row.updateID, exists: true}
}

// row returns the image as a presenceRow, nil when there was no row.
func (im rowImage) row() *presenceRow {
	if !im.exists {
		return nil
	}
	return &presenceRow{connected: fromMicro(im.connected), active: fromMicro(im.active), updateID: im.updateID}
}

// public returns the image as a Row.
func (im rowImage) public() Row {
	if !im.exists {
		return Row{}
	}
	return Row{LastConnected: fromMicro(im.connected), LastActive: fromMicro(im.active), LastUpdateID: im.updateID, Exists: true}
}

func toMicro(t time.Time) int64 {
	if t.IsZero() {
		return nullMicro
	}
	return t.UnixMicro()
}

func fromMicro(m int64) time.Time {
	if m == nullMicro {
		return time.Time{}
	}
	return time.UnixMicro(m).UTC()
}

// rowChange is one recorded change of a row.
type rowChange struct {
	id, user      int64
	at            int64 // the realm's clock, Unix nanoseconds
	before, after rowImage
}

// activityChange is one recorded deactivation or reactivation.
type activityChange struct {
	seq    int64 // the realm's last update ID when it happened
	user   int64
	at     int64 // the realm's clock, Unix nanoseconds
	active bool  // the user's state after the change
}

// ring is a FIFO queue in a ring buffer, which grows as needed up to a
// limit of items and never beyond it.
type ring[T any] struct {
	buf  []T
	head int // index of the oldest item
	n    int
}

func (q *ring[T]) len() int { return q.n }

// at returns the i-th item, oldest first.
func (q *ring[T]) at(i int) *T { return &q.buf[(q.head+i)%len(q.buf)] }

// push appends x. When the buffer is full it is doubled, but not past
// limit items unless it already holds them.
func (q *ring[T]) push(x T, limit int) {
	if q.n == len(q.buf) {
		size := max(16, 2*len(q.buf))
		if len(q.buf) < limit {
			size = min(size, limit)
		}
		q.resize(size)
	}
	q.buf[(q.head+q.n)%len(q.buf)] = x
	q.n++
}

// pop drops the oldest item.
func (q *ring[T]) pop() {
	var zero T
	q.buf[q.head] = zero
	q.head = (q.head + 1) % len(q.buf)
	q.n--
}

// shrink gives back the memory beyond limit items, or beyond what the
// queue holds if that is more.
func (q *ring[T]) shrink(limit int) {
	if len(q.buf) > max(limit, q.n, 16) {
		q.resize(max(limit, q.n, 16))
	}
}

func (q *ring[T]) resize(size int) {
	buf := make([]T, size)
	for i := range q.n {
		buf[i] = *q.at(i)
	}
	q.buf, q.head = buf, 0
}

// history is a realm's record of its past rows and user activity.
type history struct {
	limits HistoryLimits
	// changes holds exactly the changes with IDs floor+1 … the realm's
	// last update ID, in order.
	changes ring[rowChange]
	// acts holds every (de)activation that happened after ID floor+1 was
	// assigned, in order.
	acts ring[activityChange]
	// floor is the oldest ID the history can answer for; floorAt is the
	// time of change floor, math.MinInt64 while floor is 0 (the realm's
	// state before any change, since the beginning of time).
	floor, floorAt int64
	// cur is each row as of its last change, the before-image of its next.
	cur map[int64]rowImage
}

func newHistory() history {
	return history{limits: HistoryLimits{}.withDefaults(), floorAt: math.MinInt64, cur: map[int64]rowImage{}}
}

// recordRowLocked records that the user's row just took ID r.seq.
func (r *Realm) recordRowLocked(userID int64, row *presenceRow) {
	h := &r.hist
	after := imageOf(row)
	h.changes.push(rowChange{id: r.seq, user: userID, at: r.nowLocked().UnixNano(), before: h.cur[userID], after: after}, h.limits.MaxChanges+1)
	if after.exists {
		h.cur[userID] = after
	} else {
		delete(h.cur, userID)
	}
	r.trimHistoryLocked()
}

// setActiveLocked deactivates or reactivates the user, recording a change.
func (r *Realm) setActiveLocked(u *user, active bool) {
	if u.active == active {
		return
	}
	u.active = active
	r.hist.acts.push(activityChange{seq: r.seq, user: u.ID, at: r.nowLocked().UnixNano(), active: active}, r.hist.limits.MaxChanges+1)
	r.trimHistoryLocked()
}

// trimHistoryLocked drops what the limits no longer cover.
func (r *Realm) trimHistoryLocked() {
	h := &r.hist
	if n := h.changes.len(); n > 0 {
		oldest := h.changes.at(n-1).at - int64(h.limits.Span)
		for h.changes.len() > h.limits.MaxChanges || (h.changes.len() > 0 && h.changes.at(0).at < oldest) {
			h.dropChange()
		}
	}
	for h.acts.len() > 0 {
		a := h.acts.at(0)
		if a.seq > h.floor && h.acts.len() <= h.limits.MaxChanges {
			break
		}
		// Without this record the history cannot answer for the IDs
		// before a.seq.
		for h.floor < a.seq {
			h.dropChange()
		}
		h.acts.pop()
	}
}

// countAfter is the number of kept row changes with an ID above id, the
// newest ones. IDs rise with every change but may skip values (gaps in
// PresenceSequence), so they are counted rather than subtracted.
func (h *history) countAfter(id int64) int {
	n := h.changes.len()
	return n - sort.Search(n, func(i int) bool { return h.changes.at(i).id > id })
}

// dropChange forgets the oldest row change, moving the floor up to it.
func (h *history) dropChange() {
	c := h.changes.at(0)
	h.floor, h.floorAt = c.id, c.at
	h.changes.pop()
}

// checkAsOfLocked reports whether the history answers for update ID id.
func (r *Realm) checkAsOfLocked(id int64) error {
	switch {
	case id > r.seq:
		return fmt.Errorf("zuliptest: update ID %d is newer than the realm's last, %d", id, r.seq)
	case id < 0:
		return fmt.Errorf("zuliptest: negative update ID %d", id)
	case id < r.hist.floor:
		return fmt.Errorf("%w: update ID %d is older than %d", ErrHistoryTrimmed, id, r.hist.floor)
	}
	return nil
}

// presenceState is what a realm-wide presence query reads: the live rows
// and users, with the rows and active flags of an earlier moment laid
// over them for an as-of query.
type presenceState struct {
	rows       map[int64]*presenceRow // the live rows
	pastRows   map[int64]*presenceRow // rows then, where they differ; nil is no row
	pastActive map[int64]bool         // active flags then, where they differ
}

func (r *Realm) liveState() presenceState {
	return presenceState{rows: r.rows}
}

func (st presenceState) row(userID int64) *presenceRow {
	if row, ok := st.pastRows[userID]; ok {
		return row
	}
	return st.rows[userID]
}

func (st presenceState) active(u *user) bool {
	if a, ok := st.pastActive[u.ID]; ok {
		return a
	}
	return u.active
}

// stateAsOfLocked is the realm's presence state as of update ID id, by
// undoing every later change, newest first.
func (r *Realm) stateAsOfLocked(id int64) (presenceState, error) {
	if err := r.checkAsOfLocked(id); err != nil {
		return presenceState{}, err
	}
	h := &r.hist
	st := r.liveState()
	n := h.changes.len()
	if later := h.countAfter(id); later > 0 {
		st.pastRows = make(map[int64]*presenceRow, min(later, len(r.users)))
		for i := n - 1; i >= n-later; i-- {
			c := h.changes.at(i)
			st.pastRows[c.user] = c.before.row()
		}
	}
	for i := h.acts.len() - 1; i >= 0 && h.acts.at(i).seq > id; i-- {
		a := h.acts.at(i)
		if st.pastActive == nil {
			st.pastActive = map[int64]bool{}
		}
		st.pastActive[a.user] = !a.active
	}
	return st, nil
}

// SetHistoryLimits sets how much presence history the realm keeps, and
// drops at once what the new limits no longer cover. The zero
// HistoryLimits restores the defaults.
func (r *Realm) SetHistoryLimits(l HistoryLimits) {
	defer r.lock()()
	r.hist.limits = l.withDefaults()
	r.trimHistoryLocked()
	r.hist.changes.shrink(r.hist.limits.MaxChanges + 1)
	r.hist.acts.shrink(r.hist.limits.MaxChanges + 1)
}

// LastUpdateID returns the realm's PresenceSequence: the update ID of its
// newest row change, 0 before any.
func (r *Realm) LastUpdateID() int64 {
	defer r.lock()()
	return r.seq
}

// OldestAsOfID returns the oldest update ID the realm's history still
// answers for: RowsAsOf, RenderAsOf and RowChanges accept any ID from it
// to LastUpdateID.
func (r *Realm) OldestAsOfID() int64 {
	defer r.lock()()
	return r.hist.floor
}

// UpdateIDAt returns the update ID that was the realm's last at instant t
// of its clock: the ID of the newest row change made at or before t, 0 if
// there was none. It searches the changes by time, assuming the realm's
// clock did not go back while they were made. It fails with
// ErrHistoryTrimmed if t is older than the history covers.
func (r *Realm) UpdateIDAt(t time.Time) (int64, error) {
	defer r.lock()()
	h := &r.hist
	at := t.UnixNano()
	if i := sort.Search(h.changes.len(), func(i int) bool { return h.changes.at(i).at > at }); i > 0 {
		return h.changes.at(i - 1).id, nil
	}
	if h.floorAt <= at {
		return h.floor, nil
	}
	return 0, fmt.Errorf("%w: %v is older than the oldest change kept", ErrHistoryTrimmed, t)
}

// RowChanges returns the row changes made after update ID afterID, oldest
// first. It fails with ErrHistoryTrimmed if afterID is older than
// OldestAsOfID.
func (r *Realm) RowChanges(afterID int64) ([]RowChange, error) {
	defer r.lock()()
	if err := r.checkAsOfLocked(afterID); err != nil {
		return nil, err
	}
	h := &r.hist
	later := h.countAfter(afterID)
	out := make([]RowChange, later)
	for i := range out {
		c := h.changes.at(h.changes.len() - later + i)
		out[i] = RowChange{
			UpdateID: c.id, UserID: c.user,
			Before: c.before.public(), After: c.after.public(),
			At: time.Unix(0, c.at).UTC(),
		}
	}
	return out, nil
}

// RowsAsOf returns every presence row as it stood right after update ID id
// was assigned, by user ID; rows created later are absent. It fails with
// ErrHistoryTrimmed if id is older than OldestAsOfID, and with another
// error if id is newer than LastUpdateID or negative.
func (r *Realm) RowsAsOf(id int64) (map[int64]Row, error) {
	defer r.lock()()
	st, err := r.stateAsOfLocked(id)
	if err != nil {
		return nil, err
	}
	out := map[int64]Row{}
	for _, u := range r.users {
		if row := st.row(u.ID); row != nil {
			out[u.ID] = Row{LastConnected: row.connected, LastActive: row.active, LastUpdateID: row.updateID, Exists: true}
		}
	}
	return out, nil
}

// AsOfRequest is the realm-wide presence request RenderAsOf answers: the
// parameters of POST /users/me/presence that shape its answer.
type AsOfRequest struct {
	// Slim asks for the modern format keyed by user ID
	// (slim_presence=true); otherwise the answer is in the legacy format
	// keyed by email. As on the live endpoint, a LastUpdateID implies it.
	Slim bool
	// LastUpdateID is the client's last_update_id; nil when the request
	// has none (a full fetch).
	LastUpdateID *int64
	// HistoryLimitDays is history_limit_days; nil for the default of 14.
	HistoryLimitDays *int64
	// Ignored is the ignored_parameters_unsupported list the answer ends
	// with; nil or empty for none.
	Ignored []string
}

// RenderAsOf returns the body of the presence answer the server would
// have given viewer at its instant now had its presence rows and its
// users' active flags been those as of update ID id: the rows as RowsAsOf
// returns them, and each user active or not as they were just before ID
// id+1 was assigned (so a deactivation made while id was the realm's last
// ID counts). server_timestamp and the history window come from now; the
// selection (deactivated users and bots left out, the viewer's guest
// restriction, the window, the cursor) and the rendering are the live
// endpoint's own code. The realm's settings, roles and shared access are
// today's. At id = LastUpdateID it is the live answer, byte for byte. The
// request is not authenticated and the viewer's own row is not written.
//
// It fails with ErrHistoryTrimmed if id is older than OldestAsOfID, with
// another error if id is newer than LastUpdateID or negative, and with
// another when the live endpoint would answer 500 (a history window
// outside Python's date range). It panics if the viewer is not a user of
// the realm.
func (r *Realm) RenderAsOf(viewerID, id int64, now time.Time, req AsOfRequest) ([]byte, error) {
	view, err := r.viewAsOf(viewerID, id, now, req)
	if err != nil {
		return nil, err
	}
	body, _ := view.render()
	return body, nil
}

func (r *Realm) viewAsOf(viewerID, id int64, now time.Time, req AsOfRequest) (*presenceView, error) {
	defer r.lock()()
	viewer := r.mustUser(viewerID)
	st, err := r.stateAsOfLocked(id)
	if err != nil {
		return nil, err
	}
	lastUpdateID, days := req.LastUpdateID, req.HistoryLimitDays
	if r.s.settings.FeatureLevel < flLastUpdateID {
		lastUpdateID = nil
	}
	if r.s.settings.FeatureLevel < flHistoryLimitDays {
		days = nil
	}
	view, apiErr := r.presenceQueryLocked(viewer, st, req.Slim || lastUpdateID != nil, asJSONInt(lastUpdateID), asJSONInt(days), now)
	if apiErr != nil {
		return nil, fmt.Errorf("zuliptest: the server would answer %d %s", apiErr.status, apiErr.msg)
	}
	view.ignored = append([]string(nil), req.Ignored...)
	return view, nil
}

// asJSONInt is a parameter value as the live endpoint parses it.
func asJSONInt(n *int64) *jsonInt {
	if n == nil {
		return nil
	}
	return &jsonInt{v: *n, text: strconv.FormatInt(*n, 10), fits: true}
}
