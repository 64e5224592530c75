// Package zuliptest is an in-memory Zulip presence server, in the spirit of
// net/http/httptest: realms answering by Host, users, bots and guests, API
// keys and browser sessions with CSRF, invisible mode, deactivation, the
// per-user rate limit, an injectable clock and counters of what the server
// did. It answers POST /users/me/presence (under /api/v1/ and /json/)
// byte for byte like Zulip does, plus the few neighbouring endpoints a
// presence client or proxy needs: GET /users, GET /users/me,
// GET /realm/presence and GET /users/{user_id_or_email}/presence.
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
package zuliptest
