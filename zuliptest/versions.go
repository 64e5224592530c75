package zuliptest

import "time"

// API feature levels of the Zulip versions the server can model, from
// Zulip's api_docs/changelog.md. A maintenance release keeps its major's
// level unless the changelog gives it one of its own.
const (
	// FeatureLevelZulip8 is Zulip 8.x (8.0 is level 237; 238–239 were
	// reserved for 8.x and never used).
	FeatureLevelZulip8 = 237
	// FeatureLevelZulip9 is Zulip 9.2 and later 9.x (9.0 is level 277;
	// 9.2 took 278 for a backport).
	FeatureLevelZulip9 = 278
	// FeatureLevelZulip10 is Zulip 10.1 and later 10.x (10.0 is level
	// 371; 10.1 took 372).
	FeatureLevelZulip10 = 372
	// FeatureLevelZulip11 is Zulip 11.x (11.0 is level 421), the newest
	// released major, and the default.
	FeatureLevelZulip11 = 421
	// FeatureLevelMain is a Zulip main newer than 11.x whose
	// GET /users/{user_id_or_email}/presence answers the modern shape
	// (level 487 of the 12.0 development series).
	FeatureLevelMain = 487
)

// Feature levels at which behaviour the server models changed.
const (
	// flLastUpdateID: POST /users/me/presence takes last_update_id and
	// answers presence_last_update_id (Zulip 9.0, level 263).
	flLastUpdateID = 263
	// flDateJoinedMinutes: date_joined is sent to the minute (PR #31190,
	// merged into main after 9.0 without a level of its own, so first
	// released in 10.0; any level above 9.x's has it).
	flDateJoinedMinutes = FeatureLevelZulip9 + 1
	// flHistoryLimitDays: POST /users/me/presence takes
	// history_limit_days (Zulip 10.0, level 288).
	flHistoryLimitDays = 288
	// flUserPresenceModern: GET /users/{user_id_or_email}/presence
	// answers the modern shape (level 487, 12.0 development series).
	flUserPresenceModern = 487
	// flBackdateInPlace: turning presence off backdates a recent row in
	// place. Zulip 9.x instead deletes the row and writes an idle one
	// OFFLINE_THRESHOLD_SECS + 120 s in the past (do_change_user_setting
	// at 9.0, a8368ca3c3; changed before 10.0, ab0446fb4a, without a
	// level of its own).
	flBackdateInPlace = FeatureLevelZulip9 + 1
	// flInputWhileInvisible: new_user_input is recorded for a user whose
	// presence is off. Zulip 9.x records it only with the write
	// (update_active_status_backend at 9.0); 10.0 records it either way.
	flInputWhileInvisible = FeatureLevelZulip9 + 1
)

// ServerSettings are the server-wide settings of a Zulip server that
// presence depends on: its version, as an API feature level, and the
// presence tuning an operator can override in /etc/zulip/settings.py
// (defaults in zproject/default_settings.py).
type ServerSettings struct {
	// FeatureLevel is the API feature level of the Zulip version
	// modelled; see the FeatureLevel constants.
	FeatureLevel int
	// PresenceUpdateMinFreq is PRESENCE_UPDATE_MIN_FREQ_SECONDS: a
	// stored time is overwritten only by one more than this later. 0
	// stores every write.
	PresenceUpdateMinFreq time.Duration
	// PresenceLegacyEventOffset is
	// PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS: in the legacy
	// format a user is "active" while the last active time is at most
	// this much older than the last connected time.
	PresenceLegacyEventOffset time.Duration
	// OfflineThreshold is OFFLINE_THRESHOLD_SECS: the one-user legacy
	// read reports "offline" once the status is older than this, and
	// turning presence off backdates a row by this plus
	// PresenceUpdateMinFreq plus 10 s.
	OfflineThreshold time.Duration
	// IDGapRate is the probability, in [0, 1], that a PresenceSequence
	// bump first consumes an ID that no row ever holds, as a racing
	// INSERT … ON CONFLICT DO NOTHING does in do_update_user_presence.
	// The draws come from the server's seeded random source, so runs
	// are repeatable.
	IDGapRate float64
}

// DefaultServerSettings returns the settings of a Zulip 11.x server with
// Zulip's default presence settings and no ID gaps.
func DefaultServerSettings() ServerSettings {
	return ServerSettings{
		FeatureLevel:              FeatureLevelZulip11,
		PresenceUpdateMinFreq:     55 * time.Second,
		PresenceLegacyEventOffset: 70 * time.Second,
		OfflineThreshold:          200 * time.Second,
	}
}

// SetServerSettings replaces the server's settings. Durations are used at
// Zulip's whole-second precision only where Zulip compares seconds; they
// should not be negative.
func (s *Server) SetServerSettings(st ServerSettings) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settings = st
}

// ServerSettings returns the server's settings.
func (s *Server) ServerSettings() ServerSettings {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.settings
}

// invisibleBackdate is how far back turning presence off moves a row:
// OFFLINE_THRESHOLD_SECS + PRESENCE_UPDATE_MIN_FREQ_SECONDS + 10 s, and
// in Zulip 9.x OFFLINE_THRESHOLD_SECS + 120 s.
func (st *ServerSettings) invisibleBackdate() time.Duration {
	if st.FeatureLevel < flBackdateInPlace {
		return st.OfflineThreshold + 120*time.Second
	}
	return st.OfflineThreshold + st.PresenceUpdateMinFreq + 10*time.Second
}

// formatDateJoined is format_user_row's date_joined for a member:
// isoformat() before 10.0, isoformat(timespec="minutes") since.
func (st *ServerSettings) formatDateJoined(t time.Time) string {
	if st.FeatureLevel >= flDateJoinedMinutes {
		return t.UTC().Format("2006-01-02T15:04+00:00")
	}
	return isoformat(t)
}

// gapLocked reports whether the next PresenceSequence bump skips an ID.
func (s *Server) gapLocked() bool {
	r := s.settings.IDGapRate
	return r > 0 && (r >= 1 || s.rng.Float64() < r)
}
