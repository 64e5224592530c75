package zuliptest

import (
	"encoding/base64"
	"fmt"
	"strings"
	"time"
)

// Role is a user's kind, as far as presence cares.
type Role int

// The roles a simulated user can have.
const (
	RoleMember Role = iota
	RoleGuest
	RoleBot
)

// String returns "member", "guest" or "bot".
func (r Role) String() string {
	switch r {
	case RoleGuest:
		return "guest"
	case RoleBot:
		return "bot"
	}
	return "member"
}

// zulipRole is the role number Zulip's API reports (bots are members).
func (r Role) zulipRole() int64 {
	if r == RoleGuest {
		return 600
	}
	return 400
}

// parseRole is the inverse of Role.String.
func parseRole(s string) (Role, bool) {
	for _, r := range []Role{RoleMember, RoleGuest, RoleBot} {
		if s == r.String() {
			return r, true
		}
	}
	return 0, false
}

// User is a snapshot of a simulated user.
type User struct {
	// ID is unique across the server, in creation order from 1.
	ID int64
	// Email is the user's API email, which also keys legacy presences.
	Email string
	// FullName is the display name.
	FullName string
	// APIKey is the key at the time of the snapshot.
	APIKey string
	// Role is member, guest or bot.
	Role Role
}

// Settings are the realm and server settings that change presence.
type Settings struct {
	// CanAccessAllUsersGroupLimitsPresence is the server setting
	// CAN_ACCESS_ALL_USERS_GROUP_LIMITS_PRESENCE: guests then see only
	// themselves and the users they share access with (ShareAccess).
	CanAccessAllUsersGroupLimitsPresence bool
	// PresenceDisabled is realm.presence_disabled: realm-wide reads return
	// no presences and presence_last_update_id -1.
	PresenceDisabled bool
	// RateLimit turns on the per-user limit of 200 requests per minute.
	RateLimit bool
}

// Row is a snapshot of a user's UserPresence row. A zero time is NULL.
type Row struct {
	// LastConnected is last_connected_time, in UTC with microseconds.
	LastConnected time.Time
	// LastActive is last_active_time, in UTC with microseconds.
	LastActive time.Time
	// LastUpdateID is the PresenceSequence value of the last write.
	LastUpdateID int64
	// Exists is false when the user has no row.
	Exists bool
}

// ActivityInterval is a UserActivityInterval, the analytics record that
// new_user_input=true creates or extends.
type ActivityInterval struct {
	// Start and End bound the interval; End is at least 15 minutes
	// after the last input.
	Start, End time.Time
}

// minActivityInterval is UserActivityInterval.MIN_INTERVAL_LENGTH.
const minActivityInterval = 15 * time.Minute

type user struct {
	User
	realm           *Realm
	active          bool
	presenceEnabled bool
	dateJoined      time.Time
	calls           []float64 // accepted request times, for the rate limit
	intervals       []ActivityInterval
}

type session struct {
	userID int64
}

// presenceRow is a UserPresence row.
type presenceRow struct {
	connected, active time.Time // zero is NULL
	updateID          int64
}

// Realm is one simulated Zulip organization. All its methods are safe for
// concurrent use; those taking a user ID panic if the user is not in the
// realm, as a misuse of a test helper.
type Realm struct {
	s        *Server
	host     string
	offset   time.Duration
	users    []*user // creation order, which is ascending ID
	byID     map[int64]*user
	byEmail  map[string]*user
	sessions map[string]*session
	settings Settings
	seq      int64 // PresenceSequence.last_update_id
	rows     map[int64]*presenceRow
	access   map[int64]map[int64]bool
	stats    Stats
	hist     history // past rows and user activity, for the as-of queries
}

func newRealm(s *Server, host string) *Realm {
	return &Realm{
		s:        s,
		host:     host,
		byID:     map[int64]*user{},
		byEmail:  map[string]*user{},
		sessions: map[string]*session{},
		rows:     map[int64]*presenceRow{},
		access:   map[int64]map[int64]bool{},
		hist:     newHistory(),
		stats:    Stats{Requests: map[string]int64{}},
	}
}

func (r *Realm) lock() func() {
	r.s.mu.Lock()
	return r.s.mu.Unlock
}

// Host returns the host the realm answers for, "" for the default realm.
func (r *Realm) Host() string {
	return r.host
}

// AddUser creates an active user with presence enabled and a fresh API
// key; its date_joined is the realm's current time. It panics if the email
// is already taken in the realm.
func (r *Realm) AddUser(email, fullName string, role Role) User {
	defer r.lock()()
	u, err := r.addUserLocked(email, fullName, role)
	if err != nil {
		panic("zuliptest: " + err.Error())
	}
	return u.User
}

func (r *Realm) addUserLocked(email, fullName string, role Role) (*user, error) {
	if email == "" {
		return nil, fmt.Errorf("empty email")
	}
	if r.byEmail[strings.ToLower(email)] != nil {
		return nil, fmt.Errorf("email %q is already taken", email)
	}
	r.s.lastID++
	u := &user{
		User:            User{ID: r.s.lastID, Email: email, FullName: fullName, Role: role},
		realm:           r,
		active:          true,
		presenceEnabled: true,
		dateJoined:      dbTime(r.nowLocked()),
	}
	r.s.setKeyLocked(u, r.s.newKeyLocked())
	r.users = append(r.users, u)
	r.byID[u.ID] = u
	r.byEmail[strings.ToLower(email)] = u
	return u, nil
}

// Users returns all users of the realm, deactivated ones included, in
// creation order.
func (r *Realm) Users() []User {
	defer r.lock()()
	out := make([]User, len(r.users))
	for i, u := range r.users {
		out[i] = u.User
	}
	return out
}

func (r *Realm) mustUser(id int64) *user {
	u := r.byID[id]
	if u == nil {
		panic(fmt.Sprintf("zuliptest: no user %d in realm %q", id, r.host))
	}
	return u
}

// BasicAuth returns the Authorization header value for the user's current
// API key.
func (r *Realm) BasicAuth(userID int64) string {
	defer r.lock()()
	u := r.mustUser(userID)
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u.Email+":"+u.APIKey))
}

// NewSession logs the user in from a browser. The session ID goes in the
// sessionid (or __Host-sessionid) cookie; the CSRF token goes both in the
// csrftoken (or __Host-csrftoken) cookie and in the X-CSRFToken header, as
// Django compares the two and keeps no server-side copy.
func (r *Realm) NewSession(userID int64) (sessionID, csrfToken string) {
	defer r.lock()()
	return r.newSessionLocked(r.mustUser(userID))
}

func (r *Realm) newSessionLocked(u *user) (string, string) {
	id := r.s.randomLocked(32, "abcdefghijklmnopqrstuvwxyz0123456789")
	r.sessions[id] = &session{userID: u.ID}
	return id, r.s.randomLocked(csrfSecretLen, csrfChars)
}

// Logout ends a session; unknown sessions are ignored.
func (r *Realm) Logout(sessionID string) {
	defer r.lock()()
	delete(r.sessions, sessionID)
}

// Deactivate deactivates the user and, like do_deactivate_user, deletes
// all of their sessions. The presence row is left alone.
func (r *Realm) Deactivate(userID int64) {
	defer r.lock()()
	r.deactivateLocked(r.mustUser(userID))
}

func (r *Realm) deactivateLocked(u *user) {
	r.setActiveLocked(u, false)
	for id, sess := range r.sessions {
		if sess.userID == u.ID {
			delete(r.sessions, id)
		}
	}
}

// Reactivate reactivates the user.
func (r *Realm) Reactivate(userID int64) {
	defer r.lock()()
	r.setActiveLocked(r.mustUser(userID), true)
}

// SetPresenceEnabled turns invisible mode off (true) or on (false) the way
// do_change_user_setting does today. Enabling runs a forced "active"
// update at the current time. Disabling backdates a recent row to
// now − 265 s (OFFLINE_THRESHOLD_SECS + PRESENCE_UPDATE_MIN_FREQ_SECONDS +
// 10): a row active since then is recreated with both times at that
// instant; a row only connected since then has just its connected time
// moved back; an older row, or no row, is left alone. Setting the current
// value again does nothing.
func (r *Realm) SetPresenceEnabled(userID int64, enabled bool) {
	defer r.lock()()
	r.setPresenceEnabledLocked(r.mustUser(userID), enabled)
}

func (r *Realm) setPresenceEnabledLocked(u *user, enabled bool) {
	if u.presenceEnabled == enabled {
		return
	}
	u.presenceEnabled = enabled
	now := dbTime(r.nowLocked())
	if enabled {
		r.writePresenceLocked(u, true, now)
		return
	}
	r.backdateLocked(u, now.Add(-invisibleBackdate))
}

// backdateLocked moves a disabling user's recent presence back to b.
func (r *Realm) backdateLocked(u *user, b time.Time) {
	row := r.rows[u.ID]
	switch {
	case row == nil:
	case row.active.After(b):
		delete(r.rows, u.ID)
		r.writePresenceLocked(u, true, b)
	case row.connected.After(b):
		row.connected = b
		r.bumpLocked(u.ID, row)
	}
}

// RegenerateAPIKey gives the user a new API key and returns it; the old
// key stops working at once.
func (r *Realm) RegenerateAPIKey(userID int64) string {
	defer r.lock()()
	u := r.mustUser(userID)
	key := r.s.newKeyLocked()
	r.s.setKeyLocked(u, key)
	return key
}

// Settings returns the realm's settings.
func (r *Realm) Settings() Settings {
	defer r.lock()()
	return r.settings
}

// SetSettings replaces the realm's settings.
func (r *Realm) SetSettings(st Settings) {
	defer r.lock()()
	r.settings = st
}

// ShareAccess records that users a and b share a stream or a direct
// message, so that a guest among them can see the other one when the
// guest restriction is on.
func (r *Realm) ShareAccess(a, b int64) {
	defer r.lock()()
	r.mustUser(a)
	r.mustUser(b)
	r.shareLocked(a, b)
	r.shareLocked(b, a)
}

func (r *Realm) shareLocked(a, b int64) {
	if r.access[a] == nil {
		r.access[a] = map[int64]bool{}
	}
	r.access[a][b] = true
}

// restrictedLocked reports whether u only sees the users it can access:
// a guest, when CAN_ACCESS_ALL_USERS_GROUP_LIMITS_PRESENCE is on.
func (r *Realm) restrictedLocked(u *user) bool {
	return r.settings.CanAccessAllUsersGroupLimitsPresence && u.Role == RoleGuest
}

// canAccessLocked is get_accessible_user_ids for one target: the viewer
// itself and the users it shares access with.
func (r *Realm) canAccessLocked(viewer, target *user) bool {
	return viewer.ID == target.ID || r.access[viewer.ID][target.ID]
}

// Now returns the realm's clock: the server's now() plus the realm's
// offset.
func (r *Realm) Now() time.Time {
	defer r.lock()()
	return r.nowLocked()
}

func (r *Realm) nowLocked() time.Time {
	return r.s.now().Add(r.offset)
}

// Advance moves the realm's clock by d (which may be negative).
func (r *Realm) Advance(d time.Duration) {
	defer r.lock()()
	r.offset += d
}

// dbTime is a time as PostgreSQL stores it: UTC, microsecond precision.
func dbTime(t time.Time) time.Time {
	return t.UTC().Truncate(time.Microsecond)
}

// PresenceRow returns the user's presence row.
func (r *Realm) PresenceRow(userID int64) Row {
	defer r.lock()()
	r.mustUser(userID)
	row := r.rows[userID]
	if row == nil {
		return Row{}
	}
	return Row{LastConnected: row.connected, LastActive: row.active, LastUpdateID: row.updateID, Exists: true}
}

// SetPresenceRow creates or overwrites the user's presence row, for test
// setup (moving a user back 100 days, NULL timestamps, …). A zero time is
// NULL. Like a real write it takes the next update ID and counts as a row
// written.
func (r *Realm) SetPresenceRow(userID int64, lastConnected, lastActive time.Time) {
	defer r.lock()()
	r.mustUser(userID)
	row := r.rows[userID]
	if row == nil {
		row = &presenceRow{}
		r.rows[userID] = row
	}
	row.connected, row.active = dbTimeOrNull(lastConnected), dbTimeOrNull(lastActive)
	r.bumpLocked(userID, row)
}

func dbTimeOrNull(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return dbTime(t)
}

// ActivityIntervals returns the user's UserActivityInterval records.
func (r *Realm) ActivityIntervals(userID int64) []ActivityInterval {
	defer r.lock()()
	return append([]ActivityInterval(nil), r.mustUser(userID).intervals...)
}

// recordActivityLocked is do_update_user_activity_interval.
func (r *Realm) recordActivityLocked(u *user, t time.Time) {
	end := t.Add(minActivityInterval)
	if latest := latestInterval(u.intervals); latest >= 0 {
		last := &u.intervals[latest]
		if !t.After(last.End) && !end.Before(last.Start) {
			last.End = maxTime(last.End, end)
			last.Start = minTime(last.Start, t)
			return
		}
	}
	u.intervals = append(u.intervals, ActivityInterval{Start: t, End: end})
}

// latestInterval is the index of the interval that ends last, or -1.
func latestInterval(ivs []ActivityInterval) int {
	latest := -1
	for i, iv := range ivs {
		if latest < 0 || iv.End.After(ivs[latest].End) {
			latest = i
		}
	}
	return latest
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
