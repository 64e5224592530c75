package zuliptest

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

const presencePath = "/api/v1/users/me/presence"

func basic(s string) string {
	return "Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte(s))
}

func errBody(msg, code string) string {
	return `{"result":"error","msg":"` + msg + `","code":"` + code + `"}` + "\n"
}

func TestBasicAuth(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	other := e.srv.AddRealm("other.example.com").AddUser("stranger@other.example.com", "Stranger", RoleMember)
	gone := e.rm.AddUser("gone@zulip.com", "Gone", RoleMember)
	e.rm.Deactivate(gone.ID)
	key := c.hamlet.APIKey
	const wantOK = 200
	for _, tc := range []struct {
		name    string
		headers []string
		status  int
		msg     string
	}{
		{"no credentials", nil, 401, notLoggedIn},
		{"not basic", []string{"Authorization: Bearer abc"}, 400, "This endpoint requires HTTP basic authentication."},
		{"scheme case-insensitive", []string{"Authorization: bAsIc " + base64.StdEncoding.EncodeToString([]byte("hamlet@zulip.com:"+key))}, wantOK, ""},
		{"one word", []string{"Authorization: Basic"}, 401, "Invalid authorization header for basic auth"},
		{"three words", []string{"Authorization: Basic a b"}, 401, "Invalid authorization header for basic auth"},
		{"empty header", []string{"Authorization: "}, 401, "Invalid authorization header for basic auth"},
		{"bad padding", []string{"Authorization: Basic aGFtbGV0OmtleQ"}, 401, "Invalid authorization header for basic auth"},
		{"no colon", []string{basic("hamlet@zulip.com")}, 401, "Invalid authorization header for basic auth"},
		{"two colons", []string{basic("hamlet@zulip.com:a:b")}, 401, "Invalid authorization header for basic auth"},
		{"not UTF-8", []string{"Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("h\xffm:"+key))}, 401, "Invalid authorization header for basic auth"},
		{"malformed key", []string{basic("hamlet@zulip.com:short")}, 401, "Malformed API key"},
		{"unknown key", []string{basic("hamlet@zulip.com:" + strings.Repeat("a", 32))}, 401, "Invalid API key"},
		{"key of another user", []string{basic("othello@zulip.com:" + key)}, 401, "Invalid API key"},
		{"email case and spaces", []string{basic(" HAMLET@zulip.com : " + key + " ")}, wantOK, ""},
		{"deactivated", []string{basic("gone@zulip.com:" + gone.APIKey)}, 401, "Account is deactivated"},
		{"other realm", []string{basic(other.Email + ":" + other.APIKey)}, 401, "Account is not associated with this subdomain"},
		{"only a cookie on /api", []string{"Cookie: sessionid=whatever"}, 401, notLoggedIn},
		{"bot", []string{basic(c.bot.Email + ":" + c.bot.APIKey)}, 400, "This endpoint does not accept bot requests."},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.request("POST", presencePath, "status=idle", tc.headers...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.status == wantOK {
				return
			}
			code := "UNAUTHORIZED"
			if tc.status == 400 {
				code = "BAD_REQUEST"
			}
			if want := errBody(tc.msg, code); r.body != want {
				t.Fatalf("body %q, want %q", r.body, want)
			}
			wantAuth := ""
			if tc.status == 401 {
				wantAuth = `Basic realm="zulip"`
			}
			if got := r.header.Get("WWW-Authenticate"); got != wantAuth {
				t.Fatalf("WWW-Authenticate %q, want %q", got, wantAuth)
			}
		})
	}
}

func TestRegeneratedKey(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	old := e.rm.BasicAuth(c.hamlet.ID)
	e.rm.RegenerateAPIKey(c.hamlet.ID)
	if r := e.request("POST", presencePath, "status=idle", "Authorization: "+old); r.status != 401 || r.body != errBody("Invalid API key", "UNAUTHORIZED") {
		t.Fatalf("old key: %d %s", r.status, r.body)
	}
	if r := e.post(c.hamlet, "status=idle"); r.status != 200 {
		t.Fatalf("new key: %d %s", r.status, r.body)
	}
}

func TestMissingAuth(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		path, accept string
		status       int
		scheme       string
	}{
		{"/api/v1/users/me/presence", "", 401, "Basic"},
		{"/json/users/me/presence", "", 401, "Session"},
		{"/json/users", "application/json", 401, "Session"},
		{"/api/v1/users/me/presence", "text/html,application/xhtml+xml", 302, ""},
	} {
		var hdrs []string
		if tc.accept != "" {
			hdrs = append(hdrs, "Accept: "+tc.accept)
		}
		method := "POST"
		if strings.HasSuffix(tc.path, "users") {
			method = "GET"
		}
		r := e.request(method, tc.path, "", hdrs...)
		if r.status != tc.status {
			t.Fatalf("%s: status %d", tc.path, r.status)
		}
		if tc.status == 302 {
			if loc := r.header.Get("Location"); loc != "/login/?next=%2Fapi%2Fv1%2Fusers%2Fme%2Fpresence" {
				t.Errorf("Location %q", loc)
			}
			continue
		}
		if r.body != errBody(notLoggedIn, "UNAUTHORIZED") {
			t.Errorf("%s: body %q", tc.path, r.body)
		}
		if got := r.header.Get("WWW-Authenticate"); got != tc.scheme+` realm="zulip"` {
			t.Errorf("%s: WWW-Authenticate %q", tc.path, got)
		}
	}
}

func TestSessionAuth(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	sid, csrf := e.rm.NewSession(c.hamlet.ID)
	cookies := "Cookie: sessionid=" + sid + "; csrftoken=" + csrf
	masked := maskCSRF(csrf, strings.Repeat("b", csrfSecretLen))
	const path = "/json/users/me/presence"
	for _, tc := range []struct {
		name    string
		body    string
		headers []string
		status  int
		reason  string
	}{
		{"ok", "status=idle", []string{cookies, "X-CSRFToken: " + csrf}, 200, ""},
		{"masked token", "status=idle", []string{cookies, "X-CSRFToken: " + masked}, 200, ""},
		{"__Host- cookies", "status=idle", []string{"Cookie: __Host-sessionid=" + sid + "; __Host-csrftoken=" + csrf, "X-CSRFToken: " + csrf}, 200, ""},
		{"form token", "status=idle&csrfmiddlewaretoken=" + csrf, []string{cookies}, 200, ""},
		{"missing token", "status=idle", []string{cookies}, 403, "CSRF token missing."},
		{"wrong token", "status=idle", []string{cookies, "X-CSRFToken: " + strings.Repeat("a", 32)}, 403, "CSRF token from the 'X-Csrftoken' HTTP header incorrect."},
		{"short token", "status=idle", []string{cookies, "X-CSRFToken: abc"}, 403, "CSRF token from the 'X-Csrftoken' HTTP header has incorrect length."},
		{"bad characters", "status=idle", []string{cookies, "X-CSRFToken: " + strings.Repeat("-", 32)}, 403, "CSRF token from the 'X-Csrftoken' HTTP header has invalid characters."},
		{"wrong form token", "status=idle&csrfmiddlewaretoken=" + strings.Repeat("a", 32), []string{cookies}, 403, "CSRF token from POST incorrect."},
		{"no csrf cookie", "status=idle", []string{"Cookie: sessionid=" + sid, "X-CSRFToken: " + csrf}, 403, "CSRF cookie not set."},
		{"bad csrf cookie", "status=idle", []string{"Cookie: sessionid=" + sid + "; csrftoken=x", "X-CSRFToken: " + csrf}, 403, "CSRF cookie has incorrect length."},
		{"foreign origin", "status=idle", []string{cookies, "X-CSRFToken: " + csrf, "Origin: https://evil.example"}, 403, "Origin checking failed - https://evil.example does not match any trusted origins."},
		{"same origin", "status=idle", []string{cookies, "X-CSRFToken: " + csrf, "Origin: " + e.ts.URL}, 200, ""},
		{"https without referer", "status=idle", []string{cookies, "X-CSRFToken: " + csrf, "X-Forwarded-Proto: https"}, 403, "Referer checking failed - no Referer."},
		{"only Authorization on /json", "status=idle", []string{"Authorization: " + e.rm.BasicAuth(c.hamlet.ID)}, 401, ""},
		{"unknown session", "status=idle", []string{"Cookie: sessionid=nope; csrftoken=" + csrf, "X-CSRFToken: " + csrf}, 401, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.request("POST", path, tc.body, tc.headers...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			switch tc.status {
			case 403:
				want := `{"result":"error","msg":"CSRF error: ` + tc.reason + `","reason":"` + tc.reason + `","code":"CSRF_FAILED"}` + "\n"
				if r.body != want {
					t.Fatalf("body %q, want %q", r.body, want)
				}
			case 401:
				if r.body != errBody(notLoggedIn, "UNAUTHORIZED") || r.header.Get("WWW-Authenticate") != `Session realm="zulip"` {
					t.Fatalf("%q %v", r.body, r.header)
				}
			}
		})
	}

	t.Run("safe methods need no token", func(t *testing.T) {
		if r := e.request("GET", "/json/users", "", cookies); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("form token is an ignored parameter", func(t *testing.T) {
		r := e.request("POST", path, "status=idle&ping_only=true&csrfmiddlewaretoken="+csrf, cookies)
		if !strings.Contains(r.body, `"ignored_parameters_unsupported":["csrfmiddlewaretoken"]`) {
			t.Fatalf("%s", r.body)
		}
	})
	t.Run("logout", func(t *testing.T) {
		e.rm.Logout(sid)
		if r := e.request("POST", path, "status=idle", cookies, "X-CSRFToken: "+csrf); r.status != 401 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("session of a deactivated user", func(t *testing.T) {
		e.rm.Deactivate(c.iago.ID)
		sid, csrf := e.rm.NewSession(c.iago.ID)
		r := e.request("POST", path, "status=idle", "Cookie: sessionid="+sid+"; csrftoken="+csrf, "X-CSRFToken: "+csrf)
		if r.status != 401 || r.body != errBody("Account is deactivated", "USER_DEACTIVATED") || r.header.Get("WWW-Authenticate") != "" {
			t.Fatalf("%d %q %v", r.status, r.body, r.header)
		}
	})
	t.Run("deactivation ends sessions", func(t *testing.T) {
		sid, csrf := e.rm.NewSession(c.othello.ID)
		e.rm.Deactivate(c.othello.ID)
		e.rm.Reactivate(c.othello.ID)
		r := e.request("POST", path, "status=idle", "Cookie: sessionid="+sid+"; csrftoken="+csrf, "X-CSRFToken: "+csrf)
		if r.status != 401 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
}

// maskCSRF is Django's _mask_cipher_secret with a given mask.
func maskCSRF(secret, mask string) string {
	n := len(csrfChars)
	out := []byte(mask)
	for i := range secret {
		x := strings.IndexByte(csrfChars, secret[i])
		y := strings.IndexByte(csrfChars, mask[i])
		out = append(out, csrfChars[(x+y)%n])
	}
	return string(out)
}

func TestPyB64Decode(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		ok      bool
	}{
		{"aGFtbGV0OmtleQ==", "hamlet:key", true},
		{"aGFtbGV0OmtleQ", "", false},
		{"aGFtbGV0OmtleQ=", "", false},
		{"aGFt bGV0Ok=trailing", "", false},
		{"!!!", "", true},
		{"", "", true},
		{"YQ==YQ==", "a", true},
		{"a", "", false},
		{"ab", "", false},
		{"YWJj=", "abc", true},
		{"Y=WJj", "abc", true},
		{"=YWJj", "abc", true},
		{"YW\nJj", "abc", true},
		{"YWJj\xe9", "", false},
	} {
		got, ok := pyB64Decode(tc.in)
		if ok != tc.ok || ok && string(got) != tc.out {
			t.Errorf("pyB64Decode(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.out, tc.ok)
		}
	}
	if got := pyFields("x\x1cy z\xa0w\x85v"); !equal(got, []string{"x", "y", "z", "w", "v"}) {
		t.Errorf("pyFields: %q", got)
	}
}

func TestDispatch(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	auth := "Authorization: " + e.rm.BasicAuth(c.hamlet.ID)
	t.Run("405", func(t *testing.T) {
		for _, method := range []string{"GET", "PUT", "DELETE", "PATCH"} {
			r := e.request(method, presencePath, "", auth)
			want := `{"result":"error","msg":"Method Not Allowed","allowed_methods":["POST"]}`
			if r.status != 405 || r.body != want || r.header.Get("Allow") != "POST" {
				t.Errorf("%s: %d %q %v", method, r.status, r.body, r.header)
			}
		}
	})
	t.Run("405 comes before authentication", func(t *testing.T) {
		if r := e.request("GET", presencePath, ""); r.status != 405 {
			t.Fatalf("%d", r.status)
		}
	})
	t.Run("method field overrides the verb", func(t *testing.T) {
		r := e.request("POST", presencePath, "status=idle&method=GET", auth)
		if r.status != 405 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		r = e.request("POST", "/api/v1/users", "method=GET", auth)
		if r.status != 200 || !strings.Contains(r.body, `"ignored_parameters_unsupported":["method"]`) {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if r = e.request("POST", presencePath+"?method=GET", "status=idle&ping_only=true", auth); r.status != 200 {
			t.Fatalf("method in the query string must not override: %d", r.status)
		}
	})
	t.Run("OPTIONS", func(t *testing.T) {
		r := e.request("OPTIONS", presencePath, "")
		if r.status != 204 || r.header.Get("Allow") != "POST" || r.body != "" {
			t.Errorf("presence: %d %v", r.status, r.header)
		}
		if r = e.request("OPTIONS", "/json/users", ""); r.header.Get("Allow") != "GET, HEAD" {
			t.Errorf("users: %v", r.header)
		}
	})
	t.Run("HEAD", func(t *testing.T) {
		if r := e.request("HEAD", "/api/v1/users/me", "", auth); r.status != 200 || r.body != "" {
			t.Errorf("%d %q", r.status, r.body)
		}
	})
	t.Run("404", func(t *testing.T) {
		for _, p := range []string{"/api/v1/nope", "/api/v1/users/me/presence/", "/elsewhere", "/api/v1/users//presence"} {
			r := e.request("GET", p, "", auth)
			if r.status != 404 || r.body != errBody("Not Found", "BAD_REQUEST") {
				t.Errorf("%s: %d %q", p, r.status, r.body)
			}
		}
	})
	t.Run("never-cache headers", func(t *testing.T) {
		r := e.post(c.hamlet, "status=idle")
		if r.header.Get("Cache-Control") != "max-age=0, no-cache, no-store, must-revalidate, private" || r.header.Get("Expires") == "" {
			t.Errorf("%v", r.header)
		}
	})
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.rm.SetSettings(Settings{RateLimit: true})
	now := e.clock.Now()
	for i := 1; i <= rateMax; i++ {
		path := "users/me"
		if i%2 == 0 {
			path = "users" // the limit is shared by all endpoints
		}
		r := e.get(c.hamlet, path)
		if r.status != 200 {
			t.Fatalf("request %d: %d", i, r.status)
		}
		if got, want := r.header.Get("X-RateLimit-Remaining"), rateMax-i; got != itoa(want) {
			t.Fatalf("request %d: remaining %s, want %d", i, got, want)
		}
		if r.header.Get("X-RateLimit-Limit") != "200" || r.header.Get("X-RateLimit-Reset") != itoa(int(now.Unix())+60) {
			t.Fatalf("request %d: headers %v", i, r.header)
		}
	}
	check := func(retry string) {
		t.Helper()
		r := e.post(c.hamlet, "status=idle")
		want := `{"result":"error","msg":"API usage exceeded rate limit","code":"RATE_LIMIT_HIT","retry-after":` + retry + "}\n"
		if r.status != 429 || r.body != want {
			t.Fatalf("got %d %q, want 429 %q", r.status, r.body, want)
		}
		if r.header.Get("Retry-After") != retry || r.header.Get("X-RateLimit-Remaining") != "0" {
			t.Fatalf("headers %v", r.header)
		}
	}
	check("60.0")
	e.clock.Advance(30 * time.Second)
	check("30.0")
	e.clock.Advance(30 * time.Second)
	check("0.0") // the window still includes its boundary
	e.clock.Advance(500 * time.Millisecond)
	if r := e.post(c.hamlet, "status=idle"); r.status != 200 {
		t.Fatalf("after the window: %d", r.status)
	}

	t.Run("before the bot check", func(t *testing.T) {
		for range rateMax {
			e.get(c.bot, "users/me")
		}
		if r := e.post(c.bot, ""); r.status != 429 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("per user", func(t *testing.T) {
		if r := e.post(c.othello, "status=idle"); r.status != 200 || r.header.Get("X-RateLimit-Remaining") != "199" {
			t.Fatalf("%d %v", r.status, r.header)
		}
	})
	t.Run("off means no headers", func(t *testing.T) {
		e.rm.SetSettings(Settings{})
		if r := e.post(c.hamlet, "status=idle"); r.status != 200 || r.header.Get("X-RateLimit-Limit") != "" {
			t.Fatalf("%d %v", r.status, r.header)
		}
	})
}

func itoa(n int) string {
	return strconv.Itoa(n)
}

// TestDjangoCookies: request.COOKIES is django.http.parse_cookie
// (django/http/cookie.py), whose dict keeps the last of repeated names.
func TestDjangoCookies(t *testing.T) {
	for _, tc := range []struct {
		lines []string
		want  map[string]string
	}{
		{[]string{"sessionid=a; csrftoken=b"}, map[string]string{"sessionid": "a", "csrftoken": "b"}},
		{[]string{"sessionid=a; sessionid=b"}, map[string]string{"sessionid": "b"}},
		{[]string{"sessionid=a; sessionid="}, map[string]string{"sessionid": ""}},
		{[]string{"__Host-sessionid=; sessionid=a"}, map[string]string{"__Host-sessionid": "", "sessionid": "a"}},
		{[]string{" sessionid = a ;csrftoken=b=c"}, map[string]string{"sessionid": "a", "csrftoken": "b=c"}},
		{[]string{"lonely; x=1"}, map[string]string{"": "lonely", "x": "1"}},
		{[]string{"a=\"q\\\"u\\054o\""}, map[string]string{"a": "q\"u,o"}},
		{[]string{"a=\"\""}, map[string]string{"a": ""}},
		{[]string{"a=x y, b=2"}, map[string]string{"a": "x y, b=2"}},
		{[]string{";;  ;"}, map[string]string{}},
		{[]string{"sessionid=a", "sessionid=b"}, map[string]string{"sessionid": "b"}},
		{[]string{"SessionID=a"}, map[string]string{"SessionID": "a"}},
	} {
		r := &http.Request{Header: http.Header{"Cookie": tc.lines}}
		got := djangoCookies(r)
		if len(got) != len(tc.want) {
			t.Errorf("%q: %q, want %q", tc.lines, got, tc.want)
			continue
		}
		for k, v := range tc.want {
			if g, ok := got[k]; !ok || g != v {
				t.Errorf("%q: %q, want %q", tc.lines, got, tc.want)
				break
			}
		}
	}
}

func TestPyURLSplit(t *testing.T) {
	for _, tc := range []struct {
		in, scheme, netloc, rest string
		ok                       bool
	}{
		{"https://zulip.example/", "https", "zulip.example", "/", true},
		{"HTTPS://Zulip.Example:443/a?b#c", "https", "Zulip.Example:443", "/a?b#c", true},
		{"https://u@zulip.example", "https", "u@zulip.example", "", true},
		{"zulip.example/x", "", "", "zulip.example/x", true},
		{"//zulip.example/x", "", "zulip.example", "/x", true},
		{"1https://zulip.example/", "", "", "1https://zulip.example/", true},
		{"https://[::1/", "", "", "", false},
		{" \x01https://zulip.example/", "https", "zulip.example", "/", true},
	} {
		s, n, r, ok := pyURLSplit(tc.in)
		if s != tc.scheme || n != tc.netloc || r != tc.rest || ok != tc.ok {
			t.Errorf("pyURLSplit(%q) = %q, %q, %q, %v", tc.in, s, n, r, ok)
		}
	}
}

// TestSessionCookiesAsDjangoReadsThem: the session and CSRF cookies are read
// from request.COOKIES, so a repeated name means its last value, and an
// empty __Host- cookie is a present, empty one that hides the bare name, as
// in production, where the bare name is not read at all.
func TestSessionCookiesAsDjangoReadsThem(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	sid, csrf := e.rm.NewSession(c.hamlet.ID)
	bogus := strings.Repeat("z", len(sid))
	const path = "/json/users/me/presence"
	token := "X-CSRFToken: " + csrf
	for _, tc := range []struct {
		name    string
		headers []string
		status  int
	}{
		{"valid", []string{"Cookie: sessionid=" + sid + "; csrftoken=" + csrf, token}, 200},
		{"repeated session cookie, valid last", []string{"Cookie: sessionid=" + bogus + "; sessionid=" + sid + "; csrftoken=" + csrf, token}, 200},
		{"repeated session cookie, valid first", []string{"Cookie: sessionid=" + sid + "; sessionid=" + bogus + "; csrftoken=" + csrf, token}, 401},
		{"repeated session cookie, empty last", []string{"Cookie: sessionid=" + sid + "; sessionid=; csrftoken=" + csrf, token}, 401},
		{"repeated CSRF cookie, valid first", []string{"Cookie: sessionid=" + sid + "; csrftoken=" + csrf + "; csrftoken=", token}, 403},
		{"repeated CSRF cookie, valid last", []string{"Cookie: sessionid=" + sid + "; csrftoken=; csrftoken=" + csrf, token}, 200},
		{"empty __Host-sessionid beside sessionid", []string{"Cookie: __Host-sessionid=; sessionid=" + sid + "; csrftoken=" + csrf, token}, 401},
		{"empty __Host-csrftoken beside csrftoken", []string{"Cookie: sessionid=" + sid + "; __Host-csrftoken=; csrftoken=" + csrf, token}, 403},
		{"spaces around =", []string{"Cookie: sessionid = " + sid + " ; csrftoken =" + csrf, token}, 200},
		{"quoted", []string{`Cookie: sessionid="` + sid + `"; csrftoken=` + csrf, token}, 200},
		{"two Cookie lines, valid last", []string{"Cookie: sessionid=" + bogus, "Cookie: sessionid=" + sid + "; csrftoken=" + csrf, token}, 200},
		{"two Cookie lines, valid first", []string{"Cookie: sessionid=" + sid + "; csrftoken=" + csrf, "Cookie: sessionid=" + bogus, token}, 401},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.request("POST", path, "status=idle", tc.headers...)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
		})
	}

	// The Referer's netloc must be the request's host in lower case:
	// is_same_domain (django/utils/http.py) lower-cases only the host.
	for _, tc := range []struct {
		host, referer string
		status        int
	}{
		{"zulip.example", "https://zulip.example/", 200},
		{"Zulip.Example", "https://zulip.example/#narrow", 200},
		{"zulip.example", "HTTPS://zulip.example/", 200},
		{"zulip.example", "https://Zulip.example/", 403},
		{"Zulip.Example", "https://Zulip.Example/", 403},
		{"zulip.example", "https://u@zulip.example/", 403},
		{"zulip.example", "https://zulip.example:443/", 403},
		{"zulip.example", "http://zulip.example/", 403},
		{"zulip.example", "zulip.example/", 403},
	} {
		r := httptest.NewRequest("POST", "https://"+tc.host+path, strings.NewReader("status=idle"))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		r.Header.Set("Cookie", "sessionid="+sid+"; csrftoken="+csrf)
		r.Header.Set("X-CSRFToken", csrf)
		r.Header.Set("Referer", tc.referer)
		rec := httptest.NewRecorder()
		e.srv.ServeHTTP(rec, r)
		if rec.Code != tc.status {
			t.Errorf("Host %s, Referer %s: status %d, want %d: %s", tc.host, tc.referer, rec.Code, tc.status, rec.Body)
		}
	}
}

// TestPyLower: Python's str.lower, which Zulip compares Basic emails with,
// lowers İ to "i̇" and a final Σ to ς, where Go's ToLower gives "i" and σ.
func TestPyLower(t *testing.T) {
	for in, want := range map[string]string{
		"Hamlet@Zulip.Example": "hamlet@zulip.example",
		"hamlet@zulİp.example": "hamlet@zuli\u0307p.example",
		"ΟΔΟΣ@x.gr":            "οδος@x.gr",
		"ΣΟΦΟΣ.Σ@x":            "σοφοσ.ς@x", // as Python 3 gives
		"ΟΔΟΣΑ@x":              "οδοσα@x",
	} {
		if got := pyLower(in); got != want {
			t.Errorf("pyLower(%q) = %q, want %q", in, got, want)
		}
	}
	e := newEnv(t)
	c := e.newCast()
	if r := e.request("POST", presencePath, "status=active", basic("hamlet@zulİp.com:"+c.hamlet.APIKey)); r.status != 401 {
		t.Errorf("İ for i in the email: %d %s", r.status, r.body)
	}
}
