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
	// Email is the user's API email (UserProfile.email): what keys legacy
	// presences, what GET /users lists and what GET
	// /users/{email}/presence looks up. It is DeliveryEmail while the
	// user's email visibility is EmailVisibilityEveryone, else
	// user{ID}@ the realm's FakeEmailDomain.
	Email string
	// DeliveryEmail is the user's real address (UserProfile.delivery_email),
	// the one HTTP basic authentication checks.
	DeliveryEmail string
	// FullName is the display name.
	FullName string
	// APIKey is the key at the time of the snapshot.
	APIKey string
	// Role is member, guest or bot.
	Role Role
}

// Settings are the realm and server settings that change presence.
type Settings struct {
	// RestrictGuestUserAccess is the realm setting can_access_all_users_group
	// set to a group without guests (role:members): a guest can then
	// access only itself, bots and the users it shares a channel or a
	// direct message with (ShareAccess, ShareDirectMessage). On its own it
	// changes GET /users only: the users a guest cannot access are listed
	// as "Unknown user" entries (get_user_dicts_in_realm).
	RestrictGuestUserAccess bool
	// CanAccessAllUsersGroupLimitsPresence is the server setting
	// CAN_ACCESS_ALL_USERS_GROUP_LIMITS_PRESENCE (default False). With
	// RestrictGuestUserAccess it also limits a guest's presence reads to
	// the users it can access; without it, it does nothing.
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

// EmailVisibility is a user's email_address_visibility setting.
type EmailVisibility int

// The values of email_address_visibility, with Zulip's numbers.
const (
	EmailVisibilityEveryone   EmailVisibility = 1
	EmailVisibilityMembers    EmailVisibility = 2
	EmailVisibilityAdmins     EmailVisibility = 3
	EmailVisibilityNobody     EmailVisibility = 4
	EmailVisibilityModerators EmailVisibility = 5
)

type user struct {
	User
	realm           *Realm
	active          bool
	presenceEnabled bool
	visibility      EmailVisibility
	language        string // default_language
	incomingWebhook bool   // bot_type INCOMING_WEBHOOK_BOT
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
	s           *Server
	host        string
	offset      time.Duration
	users       []*user // creation order, which is ascending ID
	byID        map[int64]*user
	byEmail     map[string]*user // by lower-cased API email
	byDelivery  map[string]*user // by lower-cased delivery email
	sessions    map[string]*session
	settings    Settings
	deactivated bool  // realm.deactivated
	seq         int64 // PresenceSequence.last_update_id
	rows        map[int64]*presenceRow
	access      map[int64]map[int64]accessKind
	stats       Stats
	hist        history // past rows and user activity, for the as-of queries
}

func newRealm(s *Server, host string) *Realm {
	return &Realm{
		s:          s,
		host:       host,
		byID:       map[int64]*user{},
		byEmail:    map[string]*user{},
		byDelivery: map[string]*user{},
		sessions:   map[string]*session{},
		rows:       map[int64]*presenceRow{},
		access:     map[int64]map[int64]accessKind{},
		hist:       newHistory(),
		stats:      Stats{Requests: map[string]int64{}},
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
// key; its date_joined is the realm's current time. email is the delivery
// email; the user's email visibility is EmailVisibilityEveryone, so the
// API email is the same address (Zulip's own default for new users is the
// realm's default, "admins only" unless changed: see SetEmailVisibility).
// Its default_language is "en". It panics if the email is already taken
// in the realm.
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
	if r.byDelivery[strings.ToLower(email)] != nil || r.byEmail[strings.ToLower(email)] != nil {
		return nil, fmt.Errorf("email %q is already taken", email)
	}
	r.s.lastID++
	u := &user{
		User:            User{ID: r.s.lastID, Email: email, DeliveryEmail: email, FullName: fullName, Role: role},
		realm:           r,
		active:          true,
		presenceEnabled: true,
		visibility:      EmailVisibilityEveryone,
		language:        "en",
		dateJoined:      dbTime(r.nowLocked()),
	}
	r.s.setKeyLocked(u, r.s.newKeyLocked())
	r.users = append(r.users, u)
	r.byID[u.ID] = u
	r.byEmail[strings.ToLower(email)] = u
	r.byDelivery[strings.ToLower(email)] = u
	return u, nil
}

// SetEmailVisibility changes the user's email_address_visibility, and so
// its API email (get_display_email_address): the delivery email for
// EmailVisibilityEveryone, user{id}@FakeEmailDomain() for any other value.
// AddUser starts every user at EmailVisibilityEveryone; a real Zulip gives
// new users the realm's default (RealmUserDefault.email_address_visibility,
// EmailVisibilityAdmins unless the organization changed it), so on a real
// server most API emails are the fake ones.
func (r *Realm) SetEmailVisibility(userID int64, v EmailVisibility) {
	defer r.lock()()
	u := r.mustUser(userID)
	if v < EmailVisibilityEveryone || v > EmailVisibilityModerators {
		panic(fmt.Sprintf("zuliptest: email visibility %d out of range", v))
	}
	u.visibility = v
	delete(r.byEmail, strings.ToLower(u.Email))
	u.Email = u.DeliveryEmail
	if v != EmailVisibilityEveryone {
		u.Email = r.fakeEmailLocked(u.ID)
	}
	r.byEmail[strings.ToLower(u.Email)] = u
}

// ChangeDeliveryEmail is do_change_user_delivery_email
// (zerver/actions/user_settings.py): the user's login address becomes
// email, and so does the API email where the user's visibility is
// "everyone"; the old address is free for another account.
func (r *Realm) ChangeDeliveryEmail(userID int64, email string) {
	defer r.lock()()
	u := r.mustUser(userID)
	if other := r.byDelivery[strings.ToLower(email)]; other != nil && other != u {
		panic("zuliptest: email " + email + " is taken")
	}
	delete(r.byDelivery, strings.ToLower(u.DeliveryEmail))
	u.DeliveryEmail = email
	r.byDelivery[strings.ToLower(email)] = u
	if u.visibility == EmailVisibilityEveryone {
		delete(r.byEmail, strings.ToLower(u.Email))
		u.Email = email
		r.byEmail[strings.ToLower(email)] = u
	}
}

// EmailVisibility returns the user's email_address_visibility.
func (r *Realm) EmailVisibility(userID int64) EmailVisibility {
	defer r.lock()()
	return r.mustUser(userID).visibility
}

// fallbackFakeEmailDomain stands for Zulip's FAKE_EMAIL_DOMAIN, which
// defaults to EXTERNAL_HOST without its port.
const fallbackFakeEmailDomain = "zulip.example.com"

// FakeEmailDomain is get_fake_email_domain(realm.host): the realm's host
// when "bot@" it is a valid address, else FAKE_EMAIL_DOMAIN. The default
// realm, whose host is not known, uses FAKE_EMAIL_DOMAIN, modelled as
// "zulip.example.com".
func (r *Realm) FakeEmailDomain() string {
	if validEmailDomain(r.host) {
		return r.host
	}
	return fallbackFakeEmailDomain
}

func (r *Realm) fakeEmailLocked(id int64) string {
	return fmt.Sprintf("user%d@%s", id, r.FakeEmailDomain())
}

// validEmailDomain is the domain part of Django's EmailValidator for an
// ASCII host: "localhost", or dot-separated labels of letters, digits and
// inner hyphens ending in a label of 2 to 63 letters. (IP literals are
// valid only in brackets, which a realm host never has.)
func validEmailDomain(h string) bool {
	if h == "localhost" {
		return true
	}
	labels := strings.Split(h, ".")
	if len(labels) < 2 {
		return false
	}
	for i, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for j := 0; j < len(l); j++ {
			c := l[j] | 0x20
			letter := 'a' <= c && c <= 'z'
			if i == len(labels)-1 && !letter || !letter && !('0' <= l[j] && l[j] <= '9') && l[j] != '-' {
				return false
			}
		}
	}
	return len(labels[len(labels)-1]) >= 2
}

// SetLanguage sets the user's default_language (AddUser gives "en"). Zulip
// does not answer API requests in it: Content-Language follows the
// request (the django_language cookie, then Accept-Language, then "en").
// The web app, on loading, stores the user's language in the
// django_language cookie, so a browser session's requests carry
// LanguageCookie(userID) and are answered in that language.
func (r *Realm) SetLanguage(userID int64, lang string) {
	defer r.lock()()
	r.mustUser(userID).language = lang
}

// Language returns the user's default_language.
func (r *Realm) Language(userID int64) string {
	defer r.lock()()
	return r.mustUser(userID).language
}

// LanguageCookie returns the Cookie header pair the web app leaves in a
// browser after loading for the user: django_language set to its
// default_language (get_and_set_request_language).
func (r *Realm) LanguageCookie(userID int64) string {
	return languageCookie + "=" + r.Language(userID)
}

// SetIncomingWebhook makes a bot an incoming webhook bot (bot_type 2) or
// a generic bot again. Such a bot's API key is refused on /api with 401
// "This API is not available to incoming webhook bots.", and its session
// on /json with 400 "Webhook bots can only access webhooks". It panics if
// the user is not a bot.
func (r *Realm) SetIncomingWebhook(userID int64, on bool) {
	defer r.lock()()
	u := r.mustUser(userID)
	if u.Role != RoleBot {
		panic(fmt.Sprintf("zuliptest: user %d is not a bot", userID))
	}
	u.incomingWebhook = on
}

// DeactivateRealm deactivates the realm as do_deactivate_realm does: its
// users keep is_active but every session of theirs is deleted, and any API
// key of theirs is refused with 401 "This organization has been
// deactivated".
func (r *Realm) DeactivateRealm() {
	defer r.lock()()
	r.deactivated = true
	for id := range r.sessions {
		delete(r.sessions, id)
	}
}

// ReactivateRealm undoes DeactivateRealm (sessions stay deleted).
func (r *Realm) ReactivateRealm() {
	defer r.lock()()
	r.deactivated = false
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
// API key, with the delivery email, the one Zulip checks.
func (r *Realm) BasicAuth(userID int64) string {
	defer r.lock()()
	u := r.mustUser(userID)
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(u.DeliveryEmail+":"+u.APIKey))
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
// do_change_user_setting does. Enabling runs a forced "active" update at
// the current time. Disabling backdates a recent row to now − 265 s
// (OFFLINE_THRESHOLD_SECS + PRESENCE_UPDATE_MIN_FREQ_SECONDS + 10): a row
// active since then is recreated with both times at that instant; a row
// only connected since then has just its connected time moved back; an
// older row, or no row, is left alone. Zulip 9.x instead deletes the row
// and writes an idle one (no active time) at now − 320 s
// (OFFLINE_THRESHOLD_SECS + 120), even for a user who had none. Setting
// the current value again does nothing.
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
	b := now.Add(-r.s.settings.invisibleBackdate())
	if r.s.settings.FeatureLevel < flBackdateInPlace {
		// 9.x: whatever the row was, or none, it is now an idle one at b.
		delete(r.rows, u.ID)
		r.writePresenceLocked(u, false, b)
		return
	}
	r.backdateLocked(u, b)
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

// accessKind is what two users share: a channel, a direct message group,
// or both.
type accessKind uint8

const (
	shareChannel accessKind = 1 << iota
	shareDM
)

// ShareAccess records that users a and b are subscribed to a common
// channel, so that a restricted guest among them can access the other.
// Zulip counts a channel subscriber only while active
// (Subscription.is_user_active), so a deactivated user is inaccessible
// through channels.
func (r *Realm) ShareAccess(a, b int64) {
	defer r.lock()()
	r.mustUser(a)
	r.mustUser(b)
	r.shareLocked(a, b)
	r.shareLocked(b, a)
}

// ShareDirectMessage records that users a and b are in a common direct
// message conversation. Unlike a channel, it keeps a deactivated user
// accessible in a guest's GET /users (get_accessible_user_ids with
// include_deactivated_users).
func (r *Realm) ShareDirectMessage(a, b int64) {
	defer r.lock()()
	r.mustUser(a)
	r.mustUser(b)
	r.addShareLocked(a, b, shareDM)
	r.addShareLocked(b, a, shareDM)
}

func (r *Realm) shareLocked(a, b int64) {
	r.addShareLocked(a, b, shareChannel)
}

func (r *Realm) addShareLocked(a, b int64, k accessKind) {
	if r.access[a] == nil {
		r.access[a] = map[int64]accessKind{}
	}
	r.access[a][b] |= k
}

// guestRestrictedLocked is not check_user_can_access_all_users: u is a
// guest and the realm's can_access_all_users_group leaves guests out.
func (r *Realm) guestRestrictedLocked(u *user) bool {
	return r.settings.RestrictGuestUserAccess && u.Role == RoleGuest
}

// restrictedLocked reports whether u's presence reads show only the users
// it can access: a restricted guest, when
// CAN_ACCESS_ALL_USERS_GROUP_LIMITS_PRESENCE is also on
// (get_presence_dict_by_realm, get_presence_backend).
func (r *Realm) restrictedLocked(u *user) bool {
	return r.settings.CanAccessAllUsersGroupLimitsPresence && r.guestRestrictedLocked(u)
}

// canAccessLocked is check_can_access_user for an active target: the
// viewer itself, and the users it shares a channel or a direct message
// with.
func (r *Realm) canAccessLocked(viewer, target *user) bool {
	return viewer.ID == target.ID || r.access[viewer.ID][target.ID] != 0
}

// listsLocked is get_user_dicts_in_realm's test for a restricted guest's
// GET /users: bots, the viewer, users sharing a direct message, and
// active users sharing a channel are listed as they are.
func (r *Realm) listsLocked(viewer, target *user) bool {
	k := r.access[viewer.ID][target.ID]
	return target.Role == RoleBot || viewer.ID == target.ID || k&shareDM != 0 || k&shareChannel != 0 && target.active
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
