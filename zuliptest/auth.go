package zuliptest

import (
	"crypto/subtle"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Cookie names. Production Zulip uses the __Host- names, development the
// plain Django ones (zproject/computed_settings.py sets SESSION_COOKIE_NAME
// and CSRF_COOKIE_NAME only `if PRODUCTION`). A real server reads one name
// only; the simulation accepts both, the __Host- one whenever it is sent,
// so a request carrying both is read as production reads it.
var (
	sessionCookies = []string{"__Host-sessionid", "sessionid"}
	csrfCookies    = []string{"__Host-csrftoken", "csrftoken"}
)

const notLoggedIn = "Not logged in: API authentication or user session required"

// authenticate picks the authentication method like rest_dispatch and runs
// the matching decorator, rate limit included. It returns the user, or the
// reply that ends the request.
func (c *call) authenticate() (*user, *reply) {
	if !c.api {
		if u := c.sessionUser(); u != nil {
			return c.sessionAuth(u)
		}
	} else if _, ok := c.r.Header["Authorization"]; ok {
		return c.basicAuth()
	}
	rp := c.missingAuth()
	return nil, &rp
}

// missingAuth is JsonErrorHandler's answer to MissingAuthenticationError.
func (c *call) missingAuth() reply {
	if strings.Contains(strings.Join(c.r.Header.Values("Accept"), ","), "text/html") {
		return loginRedirect(c.r.URL.Path)
	}
	scheme := "Session"
	if c.api {
		scheme = "Basic"
	}
	return unauthorized(notLoggedIn, scheme).reply()
}

// unauthorized is UnauthorizedError, which asks for credentials.
func unauthorized(msg, scheme string) *apiError {
	return &apiError{
		status: http.StatusUnauthorized,
		msg:    msg,
		code:   "UNAUTHORIZED",
		header: http.Header{"Www-Authenticate": {scheme + ` realm="zulip"`}},
	}
}

// sessionUser is Django's request.user for a session cookie: the user of a
// live session, or nil. Django's session store is the server's, not the
// realm's: a session of another realm's user is found too, and refused
// later by validate_account_and_subdomain.
func (c *call) sessionUser() *user {
	cookies := djangoCookies(c.r)
	for _, name := range sessionCookies {
		value, ok := cookies[name]
		if !ok {
			continue
		}
		if sess := c.rm.s.sessionLocked(value); sess != nil {
			return sess
		}
		return nil
	}
	return nil
}

// sessionLocked finds the user of a session of any realm.
func (s *Server) sessionLocked(id string) *user {
	for _, rm := range s.allRealmsLocked() {
		if sess := rm.sessions[id]; sess != nil {
			return rm.byID[sess.userID]
		}
	}
	return nil
}

func (s *Server) allRealmsLocked() []*Realm {
	out := []*Realm{s.def}
	for _, rm := range s.realms {
		out = append(out, rm)
	}
	return out
}

// sessionAuth is csrf_protect(authenticated_json_view(...)): the CSRF
// check, then the rate limit (rate_limit_user, counting this request),
// then validate_account_and_subdomain and the incoming-webhook check,
// whose errors are raised as they are (not wrapped as for basic auth).
// That order is authenticated_json_view's in 9.0 (a8368ca3c3) and 10.0
// (ab0446fb4a): a session of another realm over the limit gets 429.
func (c *call) sessionAuth(u *user) (*user, *reply) {
	if reason := c.csrfReject(); reason != "" {
		rp := csrfFailure(reason)
		return nil, &rp
	}
	err := c.rateLimit(u)
	switch {
	case err != nil:
	case u.realm.deactivated:
		// RealmDeactivatedError: an AuthenticationFailedError, so 401
		// without WWW-Authenticate.
		err = &apiError{status: http.StatusUnauthorized, msg: realmDeactivated, code: "REALM_DEACTIVATED"}
	case !u.active:
		err = &apiError{status: http.StatusUnauthorized, msg: "Account is deactivated", code: "USER_DEACTIVATED"}
	case u.realm != c.rm:
		err = badRequest(wrongSubdomain)
	case u.incomingWebhook:
		err = badRequest("Webhook bots can only access webhooks")
	}
	if err != nil {
		rp := err.reply()
		return nil, &rp
	}
	return u, nil
}

const (
	realmDeactivated = "This organization has been deactivated"
	wrongSubdomain   = "Account is not associated with this subdomain"
)

// csrfFailure is Zulip's CSRF_FAILURE_VIEW for API paths.
func csrfFailure(reason string) reply {
	rp := (&apiError{
		status: http.StatusForbidden,
		msg:    "CSRF error: " + reason,
		data:   []field{{"reason", string(appendJSONString(nil, reason))}},
		code:   "CSRF_FAILED",
	}).reply()
	rp.neverCache = true
	return rp
}

// Django's CSRF constants.
const (
	csrfSecretLen = 32
	csrfTokenLen  = 2 * csrfSecretLen
	csrfChars     = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	csrfHeader    = "'X-Csrftoken' HTTP header"
)

// csrfReject runs Django's CsrfViewMiddleware checks and returns the
// rejection reason, or "" when the request passes.
func (c *call) csrfReject() string {
	switch c.method {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return ""
	}
	if origins, ok := c.r.Header["Origin"]; ok {
		origin := strings.Join(origins, ",")
		if origin != c.scheme()+"://"+c.r.Host {
			return fmt.Sprintf("Origin checking failed - %s does not match any trusted origins.", origin)
		}
	} else if c.secure() {
		if reason := c.refererReject(); reason != "" {
			return reason
		}
	}
	secret, reason := c.csrfSecret()
	if reason != "" {
		return reason
	}
	token, source := "", "POST"
	if c.method == http.MethodPost {
		if vs := c.form.post["csrfmiddlewaretoken"]; len(vs) > 0 {
			token = vs[len(vs)-1]
		}
	}
	if token == "" {
		vs, ok := c.r.Header["X-Csrftoken"]
		if !ok {
			return "CSRF token missing."
		}
		token, source = strings.Join(vs, ","), "the "+csrfHeader
	}
	if problem := csrfFormatProblem(token); problem != "" {
		return fmt.Sprintf("CSRF token from %s %s.", source, problem)
	}
	if len(token) == csrfTokenLen {
		token = unmaskCSRF(token)
	}
	if subtle.ConstantTimeCompare([]byte(token), []byte(secret)) != 1 {
		return fmt.Sprintf("CSRF token from %s incorrect.", source)
	}
	return ""
}

// csrfSecret reads the CSRF cookie, unmasking a masked one.
func (c *call) csrfSecret() (string, string) {
	cookies := djangoCookies(c.r)
	for _, name := range csrfCookies {
		value, ok := cookies[name]
		if !ok {
			continue
		}
		if problem := csrfFormatProblem(value); problem != "" {
			return "", "CSRF cookie " + problem + "."
		}
		if len(value) == csrfTokenLen {
			return unmaskCSRF(value), ""
		}
		return value, ""
	}
	return "", "CSRF cookie not set."
}

func csrfFormatProblem(tok string) string {
	if n := utf8.RuneCountInString(tok); n != csrfSecretLen && n != csrfTokenLen {
		return "has incorrect length"
	}
	for i := 0; i < len(tok); i++ {
		if !strings.ContainsRune(csrfChars, rune(tok[i])) {
			return "has invalid characters"
		}
	}
	return ""
}

// unmaskCSRF is Django's _unmask_cipher_token.
func unmaskCSRF(tok string) string {
	mask, cipher := tok[:csrfSecretLen], tok[csrfSecretLen:]
	n := len(csrfChars)
	out := make([]byte, csrfSecretLen)
	for i := range out {
		x := strings.IndexByte(csrfChars, cipher[i])
		y := strings.IndexByte(csrfChars, mask[i])
		out[i] = csrfChars[((x-y)%n+n)%n]
	}
	return string(out)
}

// secure is request.is_secure() with Zulip's SECURE_PROXY_SSL_HEADER.
func (c *call) secure() bool {
	return c.r.TLS != nil || c.r.Header.Get("X-Forwarded-Proto") == "https"
}

func (c *call) scheme() string {
	if c.secure() {
		return "https"
	}
	return "http"
}

// refererReject is Django's Referer check for HTTPS requests without an
// Origin header (CsrfViewMiddleware._check_referer, django/middleware/csrf.py).
// The Referer is split as urllib.parse.urlsplit splits it, and its netloc
// (user info and port included) must equal the request's host as
// django.utils.http.is_same_domain compares them: that lower-cases the
// pattern, the host, but not the Referer's netloc, so a Referer whose host
// is not in lower case is refused.
func (c *call) refererReject() string {
	vs, ok := c.r.Header["Referer"]
	if !ok {
		return "Referer checking failed - no Referer."
	}
	scheme, netloc, rest, ok := pyURLSplit(strings.Join(vs, ","))
	if !ok || scheme == "" || netloc == "" {
		return "Referer checking failed - Referer is malformed."
	}
	if scheme != "https" {
		return "Referer checking failed - Referer is insecure while host is secure."
	}
	if netloc != strings.ToLower(c.r.Host) {
		// referer.geturl(), for a Referer without an empty query or fragment.
		return fmt.Sprintf("Referer checking failed - %s://%s%s does not match any trusted origins.", scheme, netloc, rest)
	}
	return ""
}

// pyURLSplit is the scheme and netloc part of Python's
// urllib.parse.urlsplit, and what follows the netloc. It fails where
// urlsplit raises ValueError for unbalanced IPv6 brackets.
func pyURLSplit(u string) (scheme, netloc, rest string, ok bool) {
	u = strings.TrimLeft(u, "\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\v\f\r\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f ")
	u = strings.NewReplacer("\t", "", "\r", "", "\n", "").Replace(u)
	if i := strings.IndexByte(u, ':'); i > 0 && isASCIILetter(u[0]) {
		valid := true
		for j := 0; j < i; j++ {
			if b := u[j]; !isASCIILetter(b) && !('0' <= b && b <= '9') && b != '+' && b != '-' && b != '.' {
				valid = false
				break
			}
		}
		if valid {
			scheme, u = strings.ToLower(u[:i]), u[i+1:]
		}
	}
	if strings.HasPrefix(u, "//") {
		end := len(u)
		if j := strings.IndexAny(u[2:], "/?#"); j >= 0 {
			end = j + 2
		}
		netloc, u = u[2:end], u[end:]
		if strings.Contains(netloc, "[") != strings.Contains(netloc, "]") {
			return "", "", "", false
		}
	}
	return scheme, netloc, u, true
}

func isASCIILetter(b byte) bool { return 'a' <= b|0x20 && b|0x20 <= 'z' }

// djangoCookies is request.COOKIES: django.http.parse_cookie
// (django/http/cookie.py) of the Cookie header. It splits on ";" only,
// strips each name and value as str.strip() does, takes a chunk without
// "=" as a value with an empty name, unquotes values as http.cookies does,
// and, being a dict filled in order, keeps the LAST value of a repeated
// name, where net/http's Request.Cookie returns the first. Several Cookie
// lines are read as one joined with "; ", as HTTP/2 requires and as
// net/http reads them.
func djangoCookies(r *http.Request) map[string]string {
	out := map[string]string{}
	for _, chunk := range strings.Split(strings.Join(r.Header.Values("Cookie"), "; "), ";") {
		key, val, found := strings.Cut(chunk, "=")
		if !found {
			key, val = "", chunk
		}
		key, val = strings.Trim(key, latin1Space), strings.Trim(val, latin1Space)
		if key != "" || val != "" {
			out[key] = pyCookieUnquote(val)
		}
	}
	return out
}

// pyCookieUnquote is http.cookies._unquote: a value in double quotes loses
// them, and backslash escapes inside (three octal digits, or any other
// character but a newline) are decoded.
func pyCookieUnquote(s string) string {
	if len(s) < 2 || s[0] != '"' || s[len(s)-1] != '"' {
		return s
	}
	s = s[1 : len(s)-1]
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		if i+3 < len(s) && '0' <= s[i+1] && s[i+1] <= '3' && isOctal(s[i+2]) && isOctal(s[i+3]) {
			n := int(s[i+1]-'0')<<6 | int(s[i+2]-'0')<<3 | int(s[i+3]-'0')
			b.WriteRune(rune(n)) // chr(n), a Latin-1 character
			i += 3
			continue
		}
		if s[i+1] == '\n' {
			b.WriteByte(s[i])
			continue
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isOctal(b byte) bool { return '0' <= b && b <= '7' }

// basicAuth is authenticated_rest_api_view: get_basic_credentials, then
// validate_api_key (whose errors become 401s), then the rate limit.
func (c *call) basicAuth() (*user, *reply) {
	email, key, err := basicCredentials(strings.Join(c.r.Header.Values("Authorization"), ","))
	if err != nil {
		rp := err.reply()
		return nil, &rp
	}
	u, msg := c.rm.s.userByAPIKey(strings.TrimFunc(key, pyIsSpace), strings.TrimFunc(email, pyIsSpace))
	switch {
	case msg != "":
	case u.realm != c.rm:
		msg = wrongSubdomain
	case u.incomingWebhook:
		msg = "This API is not available to incoming webhook bots."
	}
	if msg != "" {
		rp := unauthorized(msg, "Basic").reply()
		return nil, &rp
	}
	c.sessionRead = false // the log names the user; the session is never read
	if err := c.rateLimit(u); err != nil {
		rp := err.reply()
		return nil, &rp
	}
	return u, nil
}

// basicCredentials is get_basic_credentials: exactly two whitespace
// separated words, the scheme "basic" in any case, and base64 of exactly
// one "email:key" pair.
func basicCredentials(header string) (email, key string, err *apiError) {
	invalid := unauthorized("Invalid authorization header for basic auth", "Basic")
	parts := pyFields(header)
	if len(parts) != 2 {
		return "", "", invalid
	}
	if !isBasicScheme(parts[0]) {
		return "", "", badRequest("This endpoint requires HTTP basic authentication.")
	}
	raw, ok := pyB64Decode(parts[1])
	if !ok || !utf8.Valid(raw) {
		return "", "", invalid
	}
	creds := strings.Split(string(raw), ":")
	if len(creds) != 2 {
		return "", "", invalid
	}
	return creds[0], creds[1], nil
}

// isBasicScheme is auth_type.lower() == "basic". Only ASCII letters are
// folded: no other character lower-cases to an ASCII letter in Python.
func isBasicScheme(s string) bool {
	if len(s) != len("basic") {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i]|0x20 != "basic"[i] {
			return false
		}
	}
	return true
}

// latin1Space lists the characters Python's str.split() separates on among
// those of a header value, which WSGI decodes as ISO-8859-1.
const latin1Space = "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0"

// pyFields is Python's str.split() on a header value.
func pyFields(s string) []string {
	var out []string
	start := -1
	for i := 0; i <= len(s); i++ {
		if i < len(s) && strings.IndexByte(latin1Space, s[i]) < 0 {
			if start < 0 {
				start = i
			}
			continue
		}
		if start >= 0 {
			out = append(out, s[start:i])
			start = -1
		}
	}
	return out
}

// pyIsSpace is str.isspace() for one character.
func pyIsSpace(r rune) bool {
	return unicode.IsSpace(r) || 0x1c <= r && r <= 0x1f
}

// pyB64Decode is base64.b64decode without validation (binascii.a2b_base64
// in non-strict mode): non-ASCII input is an error, other characters
// outside the alphabet are skipped, and a complete pad ends the data.
func pyB64Decode(s string) ([]byte, bool) {
	var out []byte
	quad, pads := 0, 0
	var left uint32
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			return nil, false
		}
		if c == '=' {
			pads++
			if quad >= 2 && quad+pads >= 4 {
				return out, true
			}
			continue
		}
		v := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", c)
		if v < 0 {
			continue
		}
		pads = 0
		left = left<<6 | uint32(v)
		quad++
		switch quad {
		case 2:
			out = append(out, byte(left>>4))
			left &= 0xf
		case 3:
			out = append(out, byte(left>>2))
			left &= 0x3
		case 4:
			out = append(out, byte(left))
			left, quad = 0, 0
		}
	}
	return out, quad == 0
}

// userByAPIKey is access_user_by_api_key up to the subdomain check: the
// key, then the email, compared with the DELIVERY email, then the realm
// and the account being active. API keys are unique across the server,
// like Zulip's. It returns the user or the validation error message.
func (s *Server) userByAPIKey(key, email string) (*user, string) {
	if !hasAPIKeyFormat(key) {
		return nil, "Malformed API key"
	}
	u := s.keys[key]
	if u == nil || pyLower(email) != pyLower(u.DeliveryEmail) {
		return nil, "Invalid API key"
	}
	if u.realm.deactivated {
		return nil, realmDeactivated
	}
	if !u.active {
		return nil, "Account is deactivated"
	}
	return u, ""
}

func hasAPIKeyFormat(key string) bool {
	if len(key) != 32 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if !strings.ContainsRune(csrfChars, rune(key[i])) {
			return false
		}
	}
	return true
}

// Zulip's api_by_user rule: 200 requests per 60 seconds, shared by every
// endpoint a user calls.
const (
	rateWindow = 60.0
	rateMax    = 200
)

// rateState is what RateLimitMiddleware puts in the X-RateLimit headers.
type rateState struct {
	remaining int
	reset     float64 // unix seconds
}

func (rs *rateState) setHeaders(h http.Header) {
	if rs == nil {
		return
	}
	h.Set("X-RateLimit-Limit", strconv.Itoa(rateMax))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(rs.remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(int64(rs.reset), 10))
}

// rateLimit is rate_limit_user with the Redis backend's sliding window:
// the request is refused while the 200th most recent accepted request is
// at most 60 s old; refused requests are not recorded.
func (c *call) rateLimit(u *user) *apiError {
	if !c.rm.settings.RateLimit {
		return nil
	}
	now := pyTime(c.now)
	if n := len(u.calls); n >= rateMax {
		if boundary := u.calls[n-rateMax] + rateWindow; boundary >= now {
			free := boundary - now
			c.rate = &rateState{remaining: 0, reset: now + free}
			return rateLimited(free)
		}
	}
	u.calls = append(u.calls, now)
	if len(u.calls) > rateMax {
		u.calls = append(u.calls[:0], u.calls[len(u.calls)-rateMax:]...)
	}
	count := 0
	for _, t := range u.calls {
		if t >= now-rateWindow && t <= now {
			count++
		}
	}
	c.rate = &rateState{remaining: rateMax - count, reset: u.calls[len(u.calls)-1] + rateWindow}
	return nil
}

// rateLimited is RateLimitedError.
func rateLimited(free float64) *apiError {
	f := pyFloat(free)
	return &apiError{
		status: http.StatusTooManyRequests,
		msg:    "API usage exceeded rate limit",
		code:   "RATE_LIMIT_HIT",
		after:  []field{{"retry-after", f}},
		header: http.Header{"Retry-After": {f}},
	}
}

// pyLower is Python's str.lower: Go's strings.ToLower but for the two
// full case mappings it lacks, U+0130 (İ) to "i̇" (i and U+0307) and a
// final capital sigma to ς, so that "hamlet@zulİp.example" is not
// "hamlet@zulip.example", as it is not to Zulip.
func pyLower(s string) string {
	if !strings.ContainsFunc(s, func(r rune) bool { return r == 'İ' || r == 'Σ' }) {
		return strings.ToLower(s)
	}
	rs := []rune(s)
	var b strings.Builder
	for i, r := range rs {
		switch {
		case r == 'İ':
			b.WriteString("i\u0307")
		case r == 'Σ' && casedBefore(rs[:i]) && !casedAfter(rs[i+1:]):
			b.WriteRune('ς')
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// casedBefore and casedAfter are Unicode's Final_Sigma context: a cased
// letter before, none after, case-ignorable characters skipped.
func casedBefore(rs []rune) bool {
	for i := len(rs) - 1; i >= 0; i-- {
		if !caseIgnorable(rs[i]) {
			return cased(rs[i])
		}
	}
	return false
}

func casedAfter(rs []rune) bool {
	for _, r := range rs {
		if !caseIgnorable(r) {
			return cased(r)
		}
	}
	return false
}

func cased(r rune) bool { return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) }

func caseIgnorable(r rune) bool {
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk) || r == '\'' || r == '.' || r == ':' || r == '\u00b7'
}
