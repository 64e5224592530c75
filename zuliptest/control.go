package zuliptest

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"math"
	"net/http"
	"strconv"
	"time"
)

// The control API lets a test or a demo drive the simulator over HTTP.
// Requests pick their realm by Host like API requests do, take and return
// JSON, and are not counted in the realm's Stats.
//
//	POST   /_sim/realms                        {"host"} → {"host"}
//	POST   /_sim/users                         {"email","full_name","role"} → {"user_id","email","api_key"}
//	GET    /_sim/users                         → {"users":[{"user_id","email","full_name","api_key","role","is_active","presence_enabled"}]}
//	POST   /_sim/users/{id}/deactivate         → {}
//	POST   /_sim/users/{id}/reactivate         → {}
//	POST   /_sim/users/{id}/presence_enabled   {"value"} → {}
//	POST   /_sim/users/{id}/regenerate_api_key → {"api_key"}
//	GET    /_sim/users/{id}/presence_row       → {"exists","last_connected","last_active","last_update_id"}
//	POST   /_sim/users/{id}/presence_row       {"last_connected","last_active"} (unix seconds or null) → {}
//	POST   /_sim/sessions                      {"user_id"} → {"sessionid","csrftoken"}
//	DELETE /_sim/sessions/{sessionid}          → {}
//	POST   /_sim/access                        {"user_ids":[a,b]} → {}
//	GET    /_sim/settings                      → the settings
//	POST   /_sim/settings                      any subset → the settings
//	GET    /_sim/server_settings               → the server-wide settings (ServerSettings)
//	POST   /_sim/server_settings               any subset of {"feature_level","presence_update_min_freq_seconds",
//	                                           "presence_legacy_event_offset_seconds","offline_threshold_seconds",
//	                                           "id_gap_rate"} → the server-wide settings
//	GET    /_sim/clock                         → {"now"}
//	POST   /_sim/clock                         {"advance_seconds"} → {"now"}
//	GET    /_sim/stats                         → the counters
//	POST   /_sim/stats/reset                   → the (zeroed) counters
func (s *Server) controlMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("POST /_sim/realms", s.ctl(ctlAddRealm))
	mux.Handle("POST /_sim/users", s.ctl(ctlAddUser))
	mux.Handle("GET /_sim/users", s.ctl(ctlListUsers))
	mux.Handle("POST /_sim/users/{id}/deactivate", s.ctl(withUser(ctlDeactivate)))
	mux.Handle("POST /_sim/users/{id}/reactivate", s.ctl(withUser(ctlReactivate)))
	mux.Handle("POST /_sim/users/{id}/presence_enabled", s.ctl(withUser(ctlPresenceEnabled)))
	mux.Handle("POST /_sim/users/{id}/regenerate_api_key", s.ctl(withUser(ctlRegenerateKey)))
	mux.Handle("GET /_sim/users/{id}/presence_row", s.ctl(withUser(ctlGetRow)))
	mux.Handle("POST /_sim/users/{id}/presence_row", s.ctl(withUser(ctlSetRow)))
	mux.Handle("POST /_sim/sessions", s.ctl(ctlNewSession))
	mux.Handle("DELETE /_sim/sessions/{sessionid}", s.ctl(ctlLogout))
	mux.Handle("POST /_sim/access", s.ctl(ctlShareAccess))
	mux.Handle("GET /_sim/settings", s.ctl(ctlSettings))
	mux.Handle("POST /_sim/settings", s.ctl(ctlSettings))
	mux.Handle("GET /_sim/server_settings", s.ctl(ctlServerSettings))
	mux.Handle("POST /_sim/server_settings", s.ctl(ctlServerSettings))
	mux.Handle("GET /_sim/clock", s.ctl(ctlClock))
	mux.Handle("POST /_sim/clock", s.ctl(ctlClock))
	mux.Handle("GET /_sim/stats", s.ctl(ctlStats))
	mux.Handle("POST /_sim/stats/reset", s.ctl(ctlResetStats))
	mux.HandleFunc("/_sim/", ctlNotFound)
	mux.HandleFunc("/_sim", ctlNotFound)
	return mux
}

// ctlRequest is one control request, handled under the server lock.
type ctlRequest struct {
	rm   *Realm
	r    *http.Request
	body []byte
	user *user // the {id} user, for withUser handlers
}

// decode reads the JSON body into v; an empty body leaves v alone.
func (cr *ctlRequest) decode(v any) error {
	if len(bytes.TrimSpace(cr.body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(cr.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return ctlErr(http.StatusBadRequest, "bad JSON body: "+err.Error())
	}
	return nil
}

type ctlError struct {
	status int
	msg    string
}

func (e *ctlError) Error() string { return e.msg }

func ctlErr(status int, msg string) error {
	return &ctlError{status: status, msg: msg}
}

type ctlFunc func(cr *ctlRequest) (any, error)

// ctl adapts a control handler: the body is read before the lock is
// taken, the realm is chosen by Host, and the result is written as JSON.
func (s *Server) ctl(fn ctlFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			writeControl(w, nil, ctlErr(http.StatusBadRequest, "unreadable body"))
			return
		}
		cr := &ctlRequest{rm: s.RealmFor(r.Host), r: r, body: body}
		s.mu.Lock()
		v, err := fn(cr)
		s.mu.Unlock()
		writeControl(w, v, err)
	})
}

func writeControl(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		status := http.StatusInternalServerError
		var ce *ctlError
		if errors.As(err, &ce) {
			status = ce.status
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	json.NewEncoder(w).Encode(v)
}

func ctlNotFound(w http.ResponseWriter, r *http.Request) {
	writeControl(w, nil, ctlErr(http.StatusNotFound, "no such control endpoint"))
}

// withUser resolves the {id} path value to a user of the request's realm.
func withUser(fn ctlFunc) ctlFunc {
	return func(cr *ctlRequest) (any, error) {
		id, err := strconv.ParseInt(cr.r.PathValue("id"), 10, 64)
		if err != nil {
			return nil, ctlErr(http.StatusBadRequest, "bad user id")
		}
		if cr.user = cr.rm.byID[id]; cr.user == nil {
			return nil, ctlErr(http.StatusNotFound, "no such user in this realm")
		}
		return fn(cr)
	}
}

var empty = struct{}{}

func ctlAddRealm(cr *ctlRequest) (any, error) {
	var in struct {
		Host string `json:"host"`
	}
	if err := cr.decode(&in); err != nil {
		return nil, err
	}
	if normalizeHost(in.Host) == "" {
		return nil, ctlErr(http.StatusBadRequest, "host is required")
	}
	rm := cr.rm.s.addRealmLocked(in.Host)
	return map[string]string{"host": rm.host}, nil
}

func ctlAddUser(cr *ctlRequest) (any, error) {
	var in struct {
		Email    string `json:"email"`
		FullName string `json:"full_name"`
		Role     string `json:"role"`
	}
	if err := cr.decode(&in); err != nil {
		return nil, err
	}
	role, ok := RoleMember, true
	if in.Role != "" {
		role, ok = parseRole(in.Role)
	}
	if !ok {
		return nil, ctlErr(http.StatusBadRequest, `role must be "member", "guest" or "bot"`)
	}
	u, err := cr.rm.addUserLocked(in.Email, in.FullName, role)
	if err != nil {
		return nil, ctlErr(http.StatusBadRequest, err.Error())
	}
	return map[string]any{"user_id": u.ID, "email": u.Email, "api_key": u.APIKey}, nil
}

type ctlUser struct {
	UserID          int64  `json:"user_id"`
	Email           string `json:"email"`
	FullName        string `json:"full_name"`
	APIKey          string `json:"api_key"`
	Role            string `json:"role"`
	IsActive        bool   `json:"is_active"`
	PresenceEnabled bool   `json:"presence_enabled"`
}

func ctlListUsers(cr *ctlRequest) (any, error) {
	users := make([]ctlUser, 0, len(cr.rm.users))
	for _, u := range cr.rm.users {
		users = append(users, ctlUser{
			UserID: u.ID, Email: u.Email, FullName: u.FullName, APIKey: u.APIKey,
			Role: u.Role.String(), IsActive: u.active, PresenceEnabled: u.presenceEnabled,
		})
	}
	return map[string][]ctlUser{"users": users}, nil
}

func ctlDeactivate(cr *ctlRequest) (any, error) {
	cr.rm.deactivateLocked(cr.user)
	return empty, nil
}

func ctlReactivate(cr *ctlRequest) (any, error) {
	cr.rm.setActiveLocked(cr.user, true)
	return empty, nil
}

func ctlPresenceEnabled(cr *ctlRequest) (any, error) {
	var in struct {
		Value *bool `json:"value"`
	}
	if err := cr.decode(&in); err != nil {
		return nil, err
	}
	if in.Value == nil {
		return nil, ctlErr(http.StatusBadRequest, "value is required")
	}
	cr.rm.setPresenceEnabledLocked(cr.user, *in.Value)
	return empty, nil
}

func ctlRegenerateKey(cr *ctlRequest) (any, error) {
	s := cr.rm.s
	s.setKeyLocked(cr.user, s.newKeyLocked())
	return map[string]string{"api_key": cr.user.APIKey}, nil
}

func ctlGetRow(cr *ctlRequest) (any, error) {
	out := map[string]any{"exists": false, "last_connected": nil, "last_active": nil, "last_update_id": 0}
	row := cr.rm.rows[cr.user.ID]
	if row == nil {
		return out, nil
	}
	out["exists"] = true
	out["last_connected"] = unixOrNull(row.connected)
	out["last_active"] = unixOrNull(row.active)
	out["last_update_id"] = row.updateID
	return out, nil
}

func unixOrNull(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return json.Number(pyFloat(pyTime(t)))
}

func ctlSetRow(cr *ctlRequest) (any, error) {
	var in struct {
		LastConnected *float64 `json:"last_connected"`
		LastActive    *float64 `json:"last_active"`
	}
	if err := cr.decode(&in); err != nil {
		return nil, err
	}
	row := cr.rm.rows[cr.user.ID]
	if row == nil {
		row = &presenceRow{}
		cr.rm.rows[cr.user.ID] = row
	}
	row.connected, row.active = unixToTime(in.LastConnected), unixToTime(in.LastActive)
	cr.rm.bumpLocked(cr.user.ID, row)
	return empty, nil
}

func unixToTime(f *float64) time.Time {
	if f == nil {
		return time.Time{}
	}
	sec, frac := math.Modf(*f)
	return dbTime(time.Unix(int64(sec), int64(frac*1e9)))
}

func ctlNewSession(cr *ctlRequest) (any, error) {
	var in struct {
		UserID int64 `json:"user_id"`
	}
	if err := cr.decode(&in); err != nil {
		return nil, err
	}
	u := cr.rm.byID[in.UserID]
	if u == nil {
		return nil, ctlErr(http.StatusNotFound, "no such user in this realm")
	}
	sid, csrf := cr.rm.newSessionLocked(u)
	return map[string]string{"sessionid": sid, "csrftoken": csrf}, nil
}

func ctlLogout(cr *ctlRequest) (any, error) {
	delete(cr.rm.sessions, cr.r.PathValue("sessionid"))
	return empty, nil
}

func ctlShareAccess(cr *ctlRequest) (any, error) {
	var in struct {
		UserIDs []int64 `json:"user_ids"`
	}
	if err := cr.decode(&in); err != nil {
		return nil, err
	}
	if len(in.UserIDs) != 2 || cr.rm.byID[in.UserIDs[0]] == nil || cr.rm.byID[in.UserIDs[1]] == nil {
		return nil, ctlErr(http.StatusBadRequest, "user_ids must be two users of this realm")
	}
	cr.rm.shareLocked(in.UserIDs[0], in.UserIDs[1])
	cr.rm.shareLocked(in.UserIDs[1], in.UserIDs[0])
	return empty, nil
}

type ctlSettingsJSON struct {
	CanAccessAllUsersGroupLimitsPresence *bool `json:"can_access_all_users_group_limits_presence,omitempty"`
	PresenceDisabled                     *bool `json:"presence_disabled,omitempty"`
	RateLimit                            *bool `json:"rate_limit,omitempty"`
}

func ctlSettings(cr *ctlRequest) (any, error) {
	var in ctlSettingsJSON
	if err := cr.decode(&in); err != nil {
		return nil, err
	}
	st := &cr.rm.settings
	setIf(&st.CanAccessAllUsersGroupLimitsPresence, in.CanAccessAllUsersGroupLimitsPresence)
	setIf(&st.PresenceDisabled, in.PresenceDisabled)
	setIf(&st.RateLimit, in.RateLimit)
	return map[string]bool{
		"can_access_all_users_group_limits_presence": st.CanAccessAllUsersGroupLimitsPresence,
		"presence_disabled":                          st.PresenceDisabled,
		"rate_limit":                                 st.RateLimit,
	}, nil
}

// ctlServerSettingsJSON is ServerSettings on the wire, durations in
// seconds as in Zulip's settings.py.
type ctlServerSettingsJSON struct {
	FeatureLevel              *int     `json:"feature_level,omitempty"`
	PresenceUpdateMinFreq     *float64 `json:"presence_update_min_freq_seconds,omitempty"`
	PresenceLegacyEventOffset *float64 `json:"presence_legacy_event_offset_seconds,omitempty"`
	OfflineThreshold          *float64 `json:"offline_threshold_seconds,omitempty"`
	IDGapRate                 *float64 `json:"id_gap_rate,omitempty"`
}

func ctlServerSettings(cr *ctlRequest) (any, error) {
	var in ctlServerSettingsJSON
	if err := cr.decode(&in); err != nil {
		return nil, err
	}
	for _, v := range []*float64{in.PresenceUpdateMinFreq, in.PresenceLegacyEventOffset, in.OfflineThreshold} {
		if v != nil && (*v < 0 || *v > 1e9 || math.IsNaN(*v)) {
			return nil, ctlErr(http.StatusBadRequest, "durations must be between 0 and 1e9 seconds")
		}
	}
	if in.IDGapRate != nil && !(*in.IDGapRate >= 0 && *in.IDGapRate <= 1) {
		return nil, ctlErr(http.StatusBadRequest, "id_gap_rate must be between 0 and 1")
	}
	st := &cr.rm.s.settings
	if in.FeatureLevel != nil {
		st.FeatureLevel = *in.FeatureLevel
	}
	for _, f := range []struct {
		dst *time.Duration
		src *float64
	}{{&st.PresenceUpdateMinFreq, in.PresenceUpdateMinFreq}, {&st.PresenceLegacyEventOffset, in.PresenceLegacyEventOffset}, {&st.OfflineThreshold, in.OfflineThreshold}} {
		if f.src != nil {
			*f.dst = time.Duration(*f.src * float64(time.Second))
		}
	}
	if in.IDGapRate != nil {
		st.IDGapRate = *in.IDGapRate
	}
	return map[string]any{
		"feature_level":                        st.FeatureLevel,
		"presence_update_min_freq_seconds":     st.PresenceUpdateMinFreq.Seconds(),
		"presence_legacy_event_offset_seconds": st.PresenceLegacyEventOffset.Seconds(),
		"offline_threshold_seconds":            st.OfflineThreshold.Seconds(),
		"id_gap_rate":                          st.IDGapRate,
	}, nil
}

func setIf(dst, src *bool) {
	if src != nil {
		*dst = *src
	}
}

func ctlClock(cr *ctlRequest) (any, error) {
	var in struct {
		AdvanceSeconds float64 `json:"advance_seconds"`
	}
	if err := cr.decode(&in); err != nil {
		return nil, err
	}
	cr.rm.offset += time.Duration(in.AdvanceSeconds * float64(time.Second))
	return map[string]json.Number{"now": json.Number(pyFloat(pyTime(cr.rm.nowLocked())))}, nil
}

// ctlStats copies the counters, as they are encoded after the lock is
// released.
func ctlStats(cr *ctlRequest) (any, error) {
	st := cr.rm.stats
	st.Requests = maps.Clone(st.Requests)
	return st, nil
}

func ctlResetStats(cr *ctlRequest) (any, error) {
	cr.rm.stats = Stats{Requests: map[string]int64{}}
	return Stats{Requests: map[string]int64{}}, nil
}
