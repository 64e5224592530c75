package caddymodule

import (
	"net/http"
	"strings"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
)

// The two routes of Zulip's presence endpoint.
const (
	apiPresencePath  = "/api/v1/users/me/presence"
	jsonPresencePath = "/json/users/me/presence"
)

// presenceFamily reports whether r is a presence POST, and under which
// prefix. Other methods get Zulip's own 405, so they pass through.
func presenceFamily(r *http.Request) (cache.Family, bool) {
	if r.Method != http.MethodPost {
		return 0, false
	}
	switch r.URL.Path {
	case apiPresencePath:
		return cache.FamilyAPI, true
	case jsonPresencePath:
		return cache.FamilyJSON, true
	}
	return 0, false
}

// Zulip's production cookies carry the __Host- prefix; development servers
// and older installs use the bare names.
var (
	sessionCookies = []string{"__Host-sessionid", "sessionid"}
	csrfCookies    = []string{"__Host-csrftoken", "csrftoken"}
)

// credentials returns what identifies the caller to Zulip, as Zulip reads
// it: HTTP Basic on /api, the session cookie on /json. For /json the CSRF
// token (cookie and header) and Origin are part of it too, because the
// server rejects a request whose token does not match, and such a request
// must never be answered from another request's trust.
// It returns the parts and how many there are; none means no credentials.
func credentials(r *http.Request, f cache.Family) (parts [4]string, n int) {
	if f == cache.FamilyAPI {
		auth := r.Header.Get("Authorization")
		if auth == "" {
			return parts, 0
		}
		parts[0] = auth
		return parts, 1
	}
	session := cookieValue(r, sessionCookies)
	if session == "" {
		return parts, 0
	}
	return [4]string{session, cookieValue(r, csrfCookies), r.Header.Get("X-CSRFToken"), r.Header.Get("Origin")}, 4
}

func cookieValue(r *http.Request, names []string) string {
	for _, name := range names {
		if c, err := r.Cookie(name); err == nil && c.Value != "" {
			return c.Value
		}
	}
	return ""
}

// hostOf is the host part of keys; letter case does not name another realm.
func hostOf(r *http.Request) string {
	return strings.ToLower(r.Host)
}
