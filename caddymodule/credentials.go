package caddymodule

import (
	"encoding/base64"
	"net/http"
	"strings"
	"unicode/utf8"

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
// and older installs use the bare names. Which one a server reads is its
// setting, so a request carrying both is not understood.
var (
	sessionCookies = [2]string{"__Host-sessionid", "sessionid"}
	csrfCookies    = [2]string{"__Host-csrftoken", "csrftoken"}
)

// credentials identify a caller to Zulip. parts[:n] make the session key.
type credentials struct {
	parts [4]string
	n     int
}

// readCredentials returns the request's credentials as Zulip reads them:
// HTTP Basic on /api (zerver/lib/rest.py get_basic_credentials), the
// session cookie with the CSRF token and Origin on /json (Django's session
// and CSRF middleware). ok is false when there are none, or when the
// handler cannot be sure to read them as the server does (duplicated
// headers or cookies, both cookie names, odd encodings): such a request
// must pass through, never be answered from another request's trust.
func readCredentials(r *http.Request, f cache.Family) (credentials, bool) {
	if ambiguousHeaders(r.Header) {
		return credentials{}, false
	}
	if f == cache.FamilyAPI {
		return basicCredentials(r.Header["Authorization"])
	}
	return sessionCredentials(r)
}

// basicCredentials reads Basic credentials as Zulip does: the header split
// on whitespace into exactly a scheme and a token, the scheme "basic" in
// any case, the token base64 of "email:key" with exactly one colon. Zulip
// compares the email without regard to case, so the key holds it in lower
// case: one API key makes one session however its email is spelt.
func basicCredentials(values []string) (credentials, bool) {
	if len(values) != 1 || !isASCII(values[0]) {
		return credentials{}, false
	}
	scheme, token, ok := twoFields(values[0])
	if !ok || !strings.EqualFold(scheme, "basic") {
		return credentials{}, false
	}
	var buf [256]byte
	if base64.StdEncoding.DecodedLen(len(token)) > len(buf) {
		return credentials{}, false
	}
	n, err := base64.StdEncoding.Strict().Decode(buf[:], []byte(token))
	if err != nil || !utf8.Valid(buf[:n]) {
		return credentials{}, false
	}
	email, key, ok := strings.Cut(string(buf[:n]), ":")
	if !ok || strings.Contains(key, ":") {
		return credentials{}, false
	}
	// validate_api_key strips both with Python's str.strip, whose
	// whitespace includes all of Go's: spellings Go trims alike are one
	// credential to Zulip too.
	email, key = strings.TrimSpace(email), strings.TrimSpace(key)
	if email == "" || key == "" {
		return credentials{}, false
	}
	return credentials{parts: [4]string{lowerASCII(email), key}, n: 2}, true
}

// sessionCredentials reads the session cookie, the CSRF cookie, the
// X-CSRFToken header and Origin (or, without Origin, Referer, which
// Django's CSRF check then reads). The server rejects a request whose
// token or origin does not match, so all are part of the session: such a
// request must never be answered from another request's trust.
func sessionCredentials(r *http.Request) (credentials, bool) {
	cookies := r.Header["Cookie"]
	if len(cookies) != 1 || !plainCookieHeader(cookies[0]) {
		return credentials{}, false
	}
	session, ok := onlyCookie(cookies[0], sessionCookies)
	if !ok || session == "" {
		return credentials{}, false
	}
	csrf, ok := onlyCookie(cookies[0], csrfCookies)
	if !ok {
		return credentials{}, false
	}
	token, ok := onlyHeader(r.Header, "X-Csrftoken")
	if !ok || token == "" {
		return credentials{}, false
	}
	origin, ok := originOf(r.Header)
	if !ok {
		return credentials{}, false
	}
	return credentials{parts: [4]string{session, csrf, token, origin}, n: 4}, true
}

// plainCookieHeader reports whether Django splits and trims the header as
// onlyCookie does: printable ASCII, spaces and tabs only. Django reads
// the header as Latin-1 text and strips with Python's str.strip, for
// which \x85, \xa0 and \x1c–\x1f are whitespace too; Go's TrimSpace
// takes U+0085 and U+00A0 whole and leaves \x1c–\x1f.
func plainCookieHeader(h string) bool {
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 0x7f || (c < ' ' && c != '\t') {
			return false
		}
	}
	return true
}

// onlyCookie finds the value of the one cookie among names that a Cookie
// header carries, splitting it as Django's parse_cookie does (on ";", then
// at the first "=", spaces trimmed). It reports false when the header
// carries more than one of them, or one twice, as then which one the
// server reads depends on its settings.
func onlyCookie(header string, names [2]string) (string, bool) {
	var value string
	found := 0
	for chunk := range strings.SplitSeq(header, ";") {
		name, val, _ := strings.Cut(chunk, "=")
		name = strings.TrimSpace(name)
		if name == names[0] || name == names[1] {
			found++
			value = strings.TrimSpace(val)
		}
	}
	return value, found <= 1
}

// originOf is what Django's CSRF check reads of where a request comes
// from: Origin when the request has one (an empty one too), else Referer.
// The two are told apart, so that a request without Origin is never
// answered from the trust of one with an empty Origin.
func originOf(h http.Header) (string, bool) {
	if _, present := h["Origin"]; present {
		origin, ok := onlyHeader(h, "Origin")
		return "origin " + origin, ok
	}
	referer, ok := onlyHeader(h, "Referer")
	return "referer " + referer, ok
}

// onlyHeader returns a header's value, "" when absent, and false when the
// request carries it more than once (Zulip's WSGI server joins repeated
// headers, which then match nothing).
func onlyHeader(h http.Header, name string) (string, bool) {
	switch v := h[name]; len(v) {
	case 0:
		return "", true
	case 1:
		return v[0], true
	}
	return "", false
}

// credentialHeaders are the headers Zulip reads credentials from.
var credentialHeaders = map[string]bool{
	"AUTHORIZATION": true, "COOKIE": true, "X-CSRFTOKEN": true, "ORIGIN": true, "REFERER": true,
}

// ambiguousHeaders reports a header whose name a WSGI server may read as
// one Zulip takes credentials from although Go does not: WSGI turns "-"
// and "_" alike into "_", so X_CSRFToken can stand for X-CSRFToken.
func ambiguousHeaders(h http.Header) bool {
	for name := range h {
		if strings.IndexByte(name, '_') >= 0 && credentialHeaders[strings.ToUpper(strings.ReplaceAll(name, "_", "-"))] {
			return true
		}
	}
	return false
}

// twoFields splits s as Python's str.split() does when it yields exactly
// two fields; s must be ASCII.
func twoFields(s string) (a, b string, ok bool) {
	start, fields := -1, 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && !isPySpace(s[i]) {
			if start < 0 {
				start = i
			}
			continue
		}
		if start < 0 {
			continue
		}
		switch fields++; fields {
		case 1:
			a = s[start:i]
		case 2:
			b = s[start:i]
		default:
			return "", "", false
		}
		start = -1
	}
	return a, b, fields == 2
}

// isPySpace is Python's str.isspace for ASCII: the C0 separators
// 0x1c–0x1f count too.
func isPySpace(c byte) bool {
	return c == ' ' || ('\t' <= c && c <= '\r') || (0x1c <= c && c <= 0x1f)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// lowerASCII lowers ASCII letters only: Python's and Go's lower-casing of
// other letters differ, and a key that differs costs only a session.
func lowerASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}, s)
}

// hostOf is the host part of keys; letter case does not name another realm.
func hostOf(r *http.Request) string {
	return strings.ToLower(r.Host)
}
