package zuliptest

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The presence tuning an operator can change is in ServerSettings; these
// are fixed in Zulip's code.
const (
	defaultHistoryDays = 14

	// nullAge is the age do_update_user_presence gives a NULL timestamp.
	nullAge = 24 * time.Hour
)

// Python's datetime range and timedelta limit: a history window outside
// them raises OverflowError inside get_presence_dict_by_realm.
var (
	pyMinDatetime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC)
	pyMaxDatetime = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC)
)

const maxTimedeltaDays = 999999999

// presenceParamNames are update_active_status_backend's parameters in
// signature order, the order typed_endpoint validates them in.
var presenceParamNames = []string{
	"history_limit_days", "last_update_id", "new_user_input", "ping_only", "slim_presence", "status",
}

// presenceParamsAt are the parameters update_active_status_backend takes
// at feature level fl: last_update_id from 263 (9.0), history_limit_days
// from 288 (10.0). Others are reported in ignored_parameters_unsupported.
func presenceParamsAt(fl int) []string {
	out := make([]string, 0, len(presenceParamNames))
	for _, n := range presenceParamNames {
		if (n == "last_update_id" && fl < flLastUpdateID) || (n == "history_limit_days" && fl < flHistoryLimitDays) {
			continue
		}
		out = append(out, n)
	}
	return out
}

type presenceParams struct {
	historyDays  *jsonInt
	lastUpdateID *jsonInt
	newUserInput bool
	pingOnly     bool
	slim         bool
	status       string
}

// updatePresence is POST users/me/presence (update_active_status_backend).
func (c *call) updatePresence(u *user) reply {
	if u.Role == RoleBot {
		return badRequest("This endpoint does not accept bot requests.").reply()
	}
	fl := c.rm.s.settings.FeatureLevel
	p, err := c.presenceParams(fl)
	if err != nil {
		return err.reply()
	}
	if p.lastUpdateID != nil {
		p.slim = true
	}
	if p.status != "active" && p.status != "idle" {
		return badRequest("Invalid status: " + p.status).reply()
	}
	t := dbTime(c.now)
	if u.presenceEnabled {
		c.rm.writePresenceLocked(u, p.status == "active", t)
	}
	if p.newUserInput && (u.presenceEnabled || fl >= flInputWhileInvisible) {
		c.rm.recordActivityLocked(u, t)
	}
	if p.pingOnly {
		return c.success(nil, presenceParamsAt(fl)...)
	}
	view, err := c.rm.presenceQueryLocked(u, c.rm.liveState(), p.slim, p.lastUpdateID, p.historyDays, c.now)
	if err != nil {
		return err.reply()
	}
	view.ignored = c.form.ignored(presenceParamsAt(fl)...)
	return reply{status: http.StatusOK, header: jsonHeader(), view: view, neverCache: true}
}

// presenceParams parses the parameters feature level fl takes, in
// signature order; the first failure is the answer.
func (c *call) presenceParams(fl int) (presenceParams, *apiError) {
	var p presenceParams
	for _, name := range presenceSignatureAt(fl) {
		if err := c.presenceParam(&p, name); err != nil {
			return p, err
		}
	}
	return p, nil
}

// presenceSignatureAt is the order typed_endpoint reads the parameters
// of update_active_status_backend in at feature level fl: its signature's.
// Through 10.x (9.0's a8368ca3c3, 10.0's ab0446fb4a and the 11.0
// development code of July 2025) that is status, ping_only,
// new_user_input, slim_presence, last_update_id, history_limit_days; the
// code of 11.x lists them alphabetically.
func presenceSignatureAt(fl int) []string {
	if fl >= FeatureLevelZulip11 {
		return presenceParamsAt(fl)
	}
	order := []string{"status", "ping_only", "new_user_input", "slim_presence", "last_update_id", "history_limit_days"}
	taken := presenceParamsAt(fl)
	out := order[:0]
	for _, n := range order {
		for _, t := range taken {
			if n == t {
				out = append(out, n)
			}
		}
	}
	return out
}

// presenceParam reads one parameter of update_active_status_backend.
func (c *call) presenceParam(p *presenceParams, name string) *apiError {
	var err *apiError
	switch name {
	case "history_limit_days":
		p.historyDays, err = c.form.optionalInt(name)
	case "last_update_id":
		p.lastUpdateID, err = c.form.optionalInt(name)
	case "new_user_input":
		p.newUserInput, err = c.form.optionalBool(name, false)
	case "ping_only":
		p.pingOnly, err = c.form.optionalBool(name, false)
	case "slim_presence":
		p.slim, err = c.form.optionalBool(name, false)
	case "status":
		status, ok := c.form.lookup(name)
		if !ok {
			return missingArgument(name)
		}
		p.status = status
	}
	return err
}

// missingArgument is RequestVariableMissingError.
func missingArgument(name string) *apiError {
	return &apiError{
		status: http.StatusBadRequest,
		msg:    fmt.Sprintf("Missing '%s' argument", name),
		data:   []field{{"var_name", string(appendJSONString(nil, name))}},
		code:   "REQUEST_VARIABLE_MISSING",
	}
}

// writePresenceLocked is do_update_user_presence: a missing row is
// created; otherwise a stored time is overwritten only when it is more
// than PresenceUpdateMinFreq (55 s) older than t (NULL counting as a day
// old), keeping last_connected_time ≥ last_active_time. Any change takes
// the realm's next update ID; no change consumes none.
func (r *Realm) writePresenceLocked(u *user, active bool, t time.Time) {
	minUpdateFreq := r.s.settings.PresenceUpdateMinFreq
	row := r.rows[u.ID]
	if row == nil {
		row = &presenceRow{connected: t}
		if active {
			row.active = t
		}
		r.rows[u.ID] = row
		r.bumpLocked(u.ID, row)
		return
	}
	changed := false
	if age(t, row.connected) > minUpdateFreq {
		row.connected = t
		changed = true
	}
	if active && age(t, row.active) > minUpdateFreq {
		row.active = t
		changed = true
		if row.connected.IsZero() || t.After(row.connected) {
			row.connected = t
		}
	}
	if changed {
		r.bumpLocked(u.ID, row)
	}
}

func age(t, stored time.Time) time.Duration {
	if stored.IsZero() {
		return nullAge
	}
	return t.Sub(stored)
}

// bumpLocked gives the user's just written row the realm's next
// PresenceSequence value and records the change in the realm's history.
// Every change of a row goes through it. At the server's IDGapRate the
// sequence first skips a value, which no row ever holds.
func (r *Realm) bumpLocked(userID int64, row *presenceRow) {
	if r.s.gapLocked() {
		r.seq++
	}
	r.seq++
	row.updateID = r.seq
	r.stats.RowsWritten++
	r.recordRowLocked(userID, row)
}

// presenceView is a snapshot of a presence answer, rendered after the
// server lock is released.
type presenceView struct {
	slim         bool
	entries      []presenceEntry
	serverTime   float64
	lastUpdateID string // JSON text; empty leaves the key out
	ignored      []string
	legacyOffset time.Duration // PresenceLegacyEventOffset
}

// presenceEntry is one returned row, NULL times already replaced by the
// user's date_joined.
type presenceEntry struct {
	id                int64
	email             string
	active, connected time.Time
}

func entryFor(u *user, row *presenceRow) presenceEntry {
	e := presenceEntry{id: u.ID, email: u.Email, active: row.active, connected: row.connected}
	if e.active.IsZero() {
		e.active = u.dateJoined
	}
	if e.connected.IsZero() {
		e.connected = u.dateJoined
	}
	return e
}

// presenceQueryLocked is get_presence_response for the realm-wide formats,
// reading the rows and user activity of st: the live ones for the API,
// earlier ones for RenderAsOf. server_timestamp is taken before the query,
// as Zulip does. Before feature level 263 there is no
// presence_last_update_id.
func (r *Realm) presenceQueryLocked(viewer *user, st presenceState, slim bool, lastUpdateID, days *jsonInt, now time.Time) (*presenceView, *apiError) {
	v, err := r.presenceQueryAtLocked(viewer, st, slim, lastUpdateID, days, now)
	if v != nil && r.s.settings.FeatureLevel < flLastUpdateID {
		v.lastUpdateID = ""
	}
	return v, err
}

func (r *Realm) presenceQueryAtLocked(viewer *user, st presenceState, slim bool, lastUpdateID, days *jsonInt, now time.Time) (*presenceView, *apiError) {
	v := &presenceView{slim: slim, serverTime: pyTime(now), legacyOffset: r.s.settings.PresenceLegacyEventOffset}
	if r.settings.PresenceDisabled {
		v.lastUpdateID = "-1"
		return v, nil
	}
	cutoff, ok := historyCutoff(dbTime(now), days)
	if !ok {
		return nil, internalError()
	}
	maxID := int64(-1)
	if days == nil || !days.fits || days.v != 0 {
		for _, u := range r.users {
			row := st.row(u.ID)
			if row == nil || !r.selects(viewer, u, st.active(u), row, lastUpdateID, cutoff) {
				continue
			}
			v.entries = append(v.entries, entryFor(u, row))
			maxID = max(maxID, row.updateID)
		}
	}
	switch {
	case len(v.entries) > 0:
		v.lastUpdateID = strconv.FormatInt(maxID, 10)
	case lastUpdateID == nil:
		v.lastUpdateID = "-1"
	case !lastUpdateID.serializable():
		return nil, internalError()
	default:
		v.lastUpdateID = lastUpdateID.text
	}
	return v, nil
}

// selects is the filter of get_presence_dict_by_realm for one row; active
// is whether u is an active user in the state queried.
func (r *Realm) selects(viewer, u *user, active bool, row *presenceRow, lastUpdateID *jsonInt, cutoff time.Time) bool {
	if !active || u.Role == RoleBot {
		return false
	}
	if lastUpdateID != nil && !idAfter(row.updateID, *lastUpdateID) {
		return false
	}
	// Zulip 9.x filters on the window whatever the cursor; from 10.0
	// (a36f906d1a, with history_limit_days) a positive cursor skips it.
	if lastUpdateID == nil || lastUpdateID.sign() <= 0 || r.s.settings.FeatureLevel < flHistoryLimitDays {
		// NULL never satisfies last_connected_time >= cutoff.
		if row.connected.IsZero() || row.connected.Before(cutoff) {
			return false
		}
	}
	return !r.restrictedLocked(viewer) || r.canAccessLocked(viewer, u)
}

// idAfter is last_update_id > n, for an n of any size.
func idAfter(id int64, n jsonInt) bool {
	if n.fits {
		return id > n.v
	}
	return n.sign() < 0
}

// historyCutoff is now − history_limit_days (14 by default); ok is false
// where Python would raise OverflowError.
func historyCutoff(now time.Time, days *jsonInt) (time.Time, bool) {
	n := int64(defaultHistoryDays)
	if days != nil {
		if !days.fits || days.v > maxTimedeltaDays || days.v < -maxTimedeltaDays {
			return time.Time{}, false
		}
		n = days.v
	}
	cutoff := now.AddDate(0, 0, -int(n))
	if cutoff.Before(pyMinDatetime) || cutoff.After(pyMaxDatetime) {
		return time.Time{}, false
	}
	return cutoff, true
}

// render writes the answer; it returns the body and the number of rows.
func (v *presenceView) render() ([]byte, int) {
	var j jsonWriter
	j.begin()
	j.str("result", "success")
	j.str("msg", "")
	j.key("presences")
	j.begin()
	for _, e := range v.entries {
		if v.slim {
			j.key(strconv.FormatInt(e.id, 10))
			writeModern(&j, e)
		} else {
			j.key(e.email)
			writeLegacy(&j, e, v.legacyOffset)
		}
	}
	j.end()
	j.raw("server_timestamp", pyFloat(v.serverTime))
	if v.lastUpdateID != "" {
		j.raw("presence_last_update_id", v.lastUpdateID)
	}
	if len(v.ignored) > 0 {
		j.strs("ignored_parameters_unsupported", v.ignored)
	}
	j.end()
	return j.line(), len(v.entries)
}

// writeModern is get_modern_user_presence_info.
func writeModern(j *jsonWriter, e presenceEntry) {
	j.begin()
	j.int("active_timestamp", pyTimestamp(e.active))
	j.int("idle_timestamp", pyTimestamp(e.connected))
	j.end()
}

// writeLegacy is get_legacy_user_presence_info.
func writeLegacy(j *jsonWriter, e presenceEntry, offset time.Duration) {
	status, ts := legacyStatus(e.active, e.connected, offset)
	j.begin()
	j.key("aggregated")
	j.begin()
	j.str("client", "website")
	j.str("status", status)
	j.int("timestamp", ts)
	j.end()
	j.key("website")
	j.begin()
	j.str("client", "website")
	j.str("status", status)
	j.int("timestamp", ts)
	j.bool("pushable", false)
	j.end()
	j.end()
}

// legacyStatus is format_legacy_presence_dict, on full-precision times,
// with offset PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS.
func legacyStatus(active, connected time.Time, offset time.Duration) (string, int64) {
	if !active.Add(offset).Before(connected) {
		return "active", pyTimestamp(active)
	}
	return "idle", pyTimestamp(connected)
}

// getRealmPresence is GET realm/presence (get_statuses_for_realm): the
// legacy format with the default window, bots allowed, and no
// presence_last_update_id.
func (c *call) getRealmPresence(u *user) reply {
	view, err := c.rm.presenceQueryLocked(u, c.rm.liveState(), false, nil, nil, c.now)
	if err != nil {
		return err.reply()
	}
	view.lastUpdateID = ""
	return reply{status: http.StatusOK, header: jsonHeader(), view: view, neverCache: true}
}

// getUserPresence is GET users/{user_id_or_email}/presence
// (get_presence_backend): one user, no time window. The view reads no
// parameter (it is not a typed_endpoint), so nothing is ever listed in
// ignored_parameters_unsupported. Through 11.x it answers the legacy
// shape; from feature level 487 (#38597) the modern one, whatever the
// request says.
func (c *call) getUserPresence(viewer *user) reply {
	st := c.rm.s.settings
	slim := st.FeatureLevel >= flUserPresenceModern
	target := c.rm.activeUserLocked(c.route.arg)
	switch {
	case target == nil:
		return badRequest("No such user").reply()
	case target.Role == RoleBot:
		return badRequest("Presence is not supported for bot users.").reply()
	case c.rm.restrictedLocked(viewer) && !c.rm.canAccessLocked(viewer, target):
		return badRequest("Insufficient permission").reply()
	}
	row := c.rm.rows[target.ID]
	if row == nil {
		return badRequest("No presence data for " + c.route.arg).reply()
	}
	e := entryFor(target, row)
	now := pyTimestamp(dbTime(c.now))
	rp := successReply(func(j *jsonWriter) {
		j.key("presence")
		if slim {
			writeModern(j, e)
			return
		}
		writeSingleLegacy(j, e, now, &st)
	}, nil)
	rp.rows = 1
	return rp
}

// writeSingleLegacy is the single-user legacy form: no client or pushable,
// and an aggregated status of "offline" once it is over
// OFFLINE_THRESHOLD_SECS (200 s) old, in whole seconds.
func writeSingleLegacy(j *jsonWriter, e presenceEntry, now int64, st *ServerSettings) {
	status, ts := legacyStatus(e.active, e.connected, st.PresenceLegacyEventOffset)
	aggregated := status
	if time.Duration(now-ts)*time.Second > st.OfflineThreshold {
		aggregated = "offline"
	}
	j.begin()
	j.key("aggregated")
	j.begin()
	j.str("status", aggregated)
	j.int("timestamp", ts)
	j.end()
	j.key("website")
	j.begin()
	j.str("status", status)
	j.int("timestamp", ts)
	j.end()
	j.end()
}

// activeUserLocked finds an active user (bots included) by ID, as Python's
// int() reads it, or else by email.
func (r *Realm) activeUserLocked(arg string) *user {
	var u *user
	if id, ok := pyInt(arg); ok {
		u = r.byID[id]
	} else {
		u = r.byEmail[strings.ToLower(arg)]
	}
	if u == nil || !u.active {
		return nil
	}
	return u
}

// pyInt parses s like Python's int(s) for ASCII input: surrounding
// whitespace, a sign, and single underscores between digits are allowed.
func pyInt(s string) (int64, bool) {
	s = strings.TrimFunc(s, pyIsSpace)
	digits := strings.TrimLeft(s, "+-")
	if len(s)-len(digits) > 1 || digits == "" || digits[0] == '_' || strings.HasSuffix(digits, "_") || strings.Contains(digits, "__") {
		return 0, false
	}
	n, err := strconv.ParseInt(s[:len(s)-len(digits)]+strings.ReplaceAll(digits, "_", ""), 10, 64)
	return n, err == nil
}
