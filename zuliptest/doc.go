// Package zuliptest is an in-memory Zulip presence server, in the spirit of
// net/http/httptest: realms answering by Host, users, bots and guests, API
// keys and browser sessions with CSRF, invisible mode, deactivation, the
// per-user rate limit, an injectable clock and counters of what the server
// did. It answers POST /users/me/presence (under /api/v1/ and /json/)
// byte for byte like Zulip does, plus the few neighbouring endpoints a
// presence client or proxy needs: GET /users, GET /users/me,
// GET /realm/presence and GET /users/{user_id_or_email}/presence.
//
// A server models one Zulip version and its server-wide settings
// (ServerSettings, SetServerSettings; /_sim/server_settings over HTTP):
// the API feature level, by default that of the newest released major
// (FeatureLevelZulip11), decides what changed between versions (no
// last_update_id before 9.0; in 9.x no history_limit_days, the 14-day
// window on incremental reads too, invisible mode deleting the row and
// writing an idle one, status read first; date_joined to the minute from
// 10.0; parameters read alphabetically from 11.x; the legacy-only
// one-user read through 11.x, the modern one at level 487); PRESENCE_UPDATE_MIN_FREQ_SECONDS,
// PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS and
// OFFLINE_THRESHOLD_SECS are settings as in Zulip's settings.py; and
// IDGapRate makes PresenceSequence skip IDs, as racing writes do.
//
// Answers leave through a model of the nginx in front of every Zulip
// (gzip.go): JSON is gzip-compressed at level 1 for clients that accept
// gzip, with Vary: Accept-Encoding, as Zulip's nginx.conf configures it,
// and every answer carries its security headers, plus the CORS ones
// under /api/;
// SetGzipLevel changes the level or turns compression off. Stats counts
// both the raw bytes (ResponseBytes) and the bytes sent (WireBytes).
//
// It is the oracle of the fidelity tests of the presence proxy, so it is
// written from the behavioural spec of Zulip, independently of the proxy's
// own protocol package; the two implementations check each other.
//
// Tests usually start one with
//
//	srv := httptest.NewServer(zuliptest.New(clock))
//
// and drive it through the Go API (AddUser, Advance, SetPresenceEnabled, …)
// or through the HTTP control API under /_sim/. Each realm keeps a bounded
// history of its presence rows (HistoryLimits), from which RenderAsOf gives
// the answer the server would have given as of an earlier update ID, to
// check answers that may be a few seconds old. NewDemo builds a seeded demo
// realm with simulated background activity; the Caddy handler module
// http.handlers.zulip_sim that serves it lives in package caddysim, so that
// importing zuliptest registers nothing with Caddy.
//
// # The control API
//
// Under /_sim/ the server takes JSON requests that set up and inspect the
// realm chosen by Host; they are not counted in its Stats. The full list,
// with each body and answer, is the comment of controlMux in control.go:
//
//	POST   /_sim/realms                          {"host"}: a realm answering for that Host
//	POST   /_sim/users                           {"email","full_name","role"} → {"user_id","email","api_key"}
//	GET    /_sim/users                           the users, with their API keys
//	POST   /_sim/users/{id}/deactivate           also reactivate, regenerate_api_key
//	POST   /_sim/users/{id}/presence_enabled     {"value":false}: invisible mode
//	GET    /_sim/users/{id}/presence_row         the UserPresence row; POST sets it
//	POST   /_sim/sessions                        {"user_id"} → {"sessionid","csrftoken"}; DELETE …/{sessionid} logs out
//	POST   /_sim/access                          {"user_ids":[a,b]}: a and b share a channel
//	POST   /_sim/settings                        realm settings: guest restriction, presence disabled, rate limit
//	POST   /_sim/server_settings                 version and settings.py values (ServerSettings)
//	POST   /_sim/clock                           {"advance_seconds":N}
//	GET    /_sim/stats                           requests, bytes (raw and on the wire), rows read and written
//	POST   /_sim/stats/reset
//
// The demo realm that `go run ./xcaddy run --config Caddyfile.example`
// serves on :9991 answers the same API.
package zuliptest
