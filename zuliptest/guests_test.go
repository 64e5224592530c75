package zuliptest

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// Guests, the two emails, the authentication refusals and the locale
// headers, each as Zulip's source has them; docs/zulip-presence.md
// ("Guests and user lists", "Two emails", "Authentication",
// "Response headers") cites the functions.

// TestGuestUserList: zerver/lib/users.py get_user_dicts_in_realm and
// get_users_for_api. A restricted guest's GET /users lists every user: the
// accessible ones first (bots, itself, users sharing a direct message, active
// users sharing a channel), then the others as get_data_for_inaccessible_user
// writes them. The realm setting alone decides this.
func TestGuestUserList(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.rm.ShareAccess(c.polonius.ID, c.iago.ID)
	e.rm.ShareAccess(c.polonius.ID, c.cordelia.ID)       // channel only
	e.rm.ShareDirectMessage(c.polonius.ID, c.othello.ID) // direct message
	e.rm.Deactivate(c.cordelia.ID)
	e.rm.Deactivate(c.othello.ID)
	e.rm.SetEmailVisibility(c.iago.ID, EmailVisibilityAdmins)

	ids := func(r resp) []string {
		var out []string
		for _, m := range r.mustJSON(t)["members"].([]any) {
			out = append(out, fmt.Sprint(m.(map[string]any)["user_id"]))
		}
		return out
	}
	all := []string{id(c.hamlet), id(c.othello), id(c.iago), id(c.cordelia), id(c.polonius), id(c.bot)}
	if got := ids(e.get(c.polonius, "users")); !equal(got, all) {
		t.Fatalf("unrestricted guest: %v", got)
	}
	// CAN_ACCESS_ALL_USERS_GROUP_LIMITS_PRESENCE plays no part.
	e.rm.SetSettings(Settings{CanAccessAllUsersGroupLimitsPresence: true})
	if got := ids(e.get(c.polonius, "users")); !equal(got, all) {
		t.Fatalf("server setting alone: %v", got)
	}
	e.rm.SetSettings(Settings{RestrictGuestUserAccess: true})
	r := e.get(c.polonius, "users")
	want := []string{id(c.othello), id(c.iago), id(c.polonius), id(c.bot), id(c.hamlet), id(c.cordelia)}
	if got := ids(r); !equal(got, want) {
		t.Fatalf("restricted guest lists %v, want %v", got, want)
	}
	fake := func(u User) string {
		return fmt.Sprintf(`{"email":"user%d@zulip.example.com","user_id":%d,"avatar_version":1,"is_admin":false,"is_owner":false,"is_guest":false,"role":400,"is_bot":false,"full_name":"Unknown user","timezone":"","is_active":true,"date_joined":"1970-01-01T00:00:00+00:00","delivery_email":null,"avatar_url":"/static/images/unknown-user-avatar.png","profile_data":{}}`, u.ID, u.ID)
	}
	// Hamlet shares nothing; deactivated Cordelia shares only a channel,
	// whose subscription no longer counts (is_user_active).
	if !strings.HasSuffix(r.body, ","+fake(c.hamlet)+","+fake(c.cordelia)+"]}\n") {
		t.Fatalf("inaccessible entries: %s", r.body)
	}
	// Accessible users appear as they are: Iago under his API email,
	// deactivated Othello as deactivated.
	for _, m := range r.mustJSON(t)["members"].([]any) {
		m := m.(map[string]any)
		switch fmt.Sprint(m["user_id"]) {
		case id(c.iago):
			if m["email"] != fmt.Sprintf("user%d@zulip.example.com", c.iago.ID) || m["full_name"] != "Iago" {
				t.Errorf("iago: %v", m)
			}
		case id(c.othello):
			if m["is_active"] != false || m["full_name"] != "Othello" {
				t.Errorf("othello: %v", m)
			}
		}
	}
	// Members are never restricted.
	if got := ids(e.get(c.hamlet, "users")); !equal(got, all) {
		t.Fatalf("member: %v", got)
	}
}

// TestGuestPresenceEmails: zerver/lib/presence.py get_presence_dict_by_realm
// keys legacy rows by user_profile__email, the API email, for every row a
// guest is given; only GET /users substitutes fake entries.
func TestGuestPresenceEmails(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.rm.ShareAccess(c.polonius.ID, c.hamlet.ID)
	e.rm.SetEmailVisibility(c.hamlet.ID, EmailVisibilityMembers)
	e.post(c.hamlet, "status=active")
	e.post(c.othello, "status=active")
	hamlet := fmt.Sprintf("user%d@zulip.example.com", c.hamlet.ID)
	for _, st := range []Settings{{RestrictGuestUserAccess: true}, {RestrictGuestUserAccess: true, CanAccessAllUsersGroupLimitsPresence: true}} {
		e.rm.SetSettings(st)
		want := sorted(hamlet, c.polonius.Email)
		if !st.CanAccessAllUsersGroupLimitsPresence {
			want = sorted(hamlet, c.othello.Email, c.polonius.Email)
		}
		if got := keys(e.post(c.polonius, "status=active").presences(t)); !equal(got, want) {
			t.Errorf("%+v: %v, want %v", st, got, want)
		}
	}
}

// TestTwoEmails: zerver/decorator.py access_user_by_api_key compares the
// delivery email; zerver/lib/create_user.py get_display_email_address makes
// the API email user{id}@get_fake_email_domain(realm.host) unless the
// visibility is "everyone"; get_presence_backend looks users up by API
// email; GET /users/me adds delivery_email.
func TestTwoEmails(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.rm.SetEmailVisibility(c.hamlet.ID, EmailVisibilityAdmins)
	hamlet := e.rm.Users()[0]
	api := fmt.Sprintf("user%d@zulip.example.com", c.hamlet.ID)
	if hamlet.Email != api || hamlet.DeliveryEmail != "hamlet@zulip.com" {
		t.Fatalf("snapshot: %+v", hamlet)
	}
	if r := e.request("POST", presencePath, "status=active", basic("HAMLET@zulip.com:"+c.hamlet.APIKey)); r.status != 200 {
		t.Fatalf("delivery email: %d %s", r.status, r.body)
	}
	if r := e.request("POST", presencePath, "status=active", basic(api+":"+c.hamlet.APIKey)); r.status != 401 || r.body != errBody("Invalid API key", "UNAUTHORIZED") {
		t.Fatalf("API email as login: %d %s", r.status, r.body)
	}
	if got := keys(e.post(c.othello, "status=active").presences(t)); !equal(got, sorted(api, c.othello.Email)) {
		t.Fatalf("legacy keys: %v", got)
	}
	if r := e.get(c.othello, "users/"+url.PathEscape(api)+"/presence"); r.status != 200 {
		t.Fatalf("lookup by API email: %d %s", r.status, r.body)
	}
	if r := e.get(c.othello, "users/hamlet@zulip.com/presence"); r.status != 400 || !strings.Contains(r.body, "No such user") {
		t.Fatalf("lookup by delivery email: %d %s", r.status, r.body)
	}
	me := e.get(c.hamlet, "users/me").mustJSON(t)
	if me["email"] != api || me["delivery_email"] != "hamlet@zulip.com" {
		t.Fatalf("users/me: %v", me)
	}
	// GET /users shows the delivery email only where
	// can_access_delivery_email allows: oneself, or visibility
	// "everyone", or "members" to a member.
	deliveryIn := func(viewer User) any {
		for _, m := range e.get(viewer, "users").mustJSON(t)["members"].([]any) {
			if m := m.(map[string]any); fmt.Sprint(m["user_id"]) == fmt.Sprint(c.hamlet.ID) {
				return m["delivery_email"]
			}
		}
		return "absent"
	}
	if got := deliveryIn(c.othello); got != nil {
		t.Fatalf("admins-only delivery email shown to a member: %v", got)
	}
	if got := deliveryIn(c.hamlet); got != "hamlet@zulip.com" {
		t.Fatalf("own delivery email in GET /users: %v", got)
	}
	e.rm.SetEmailVisibility(c.hamlet.ID, EmailVisibilityMembers)
	if got := deliveryIn(c.othello); got != "hamlet@zulip.com" {
		t.Fatalf("members-visible delivery email to a member: %v", got)
	}
	if got := deliveryIn(c.polonius); got != nil {
		t.Fatalf("members-visible delivery email to a guest: %v", got)
	}
	e.rm.SetEmailVisibility(c.hamlet.ID, EmailVisibilityAdmins)
	// A realm whose host can be an email domain uses it.
	rm := e.srv.AddRealm("chat.example.org:8443")
	u := rm.AddUser("a@example.org", "A", RoleMember)
	rm.SetEmailVisibility(u.ID, EmailVisibilityNobody)
	if got := rm.Users()[0].Email; got != fmt.Sprintf("user%d@chat.example.org", u.ID) {
		t.Fatalf("fake domain: %s", got)
	}
	rm.SetEmailVisibility(u.ID, EmailVisibilityEveryone)
	if got := rm.Users()[0].Email; got != "a@example.org" {
		t.Fatalf("back to everyone: %s", got)
	}
}

// TestAuthRefusals: zerver/decorator.py validate_account_and_subdomain,
// validate_api_key, authenticated_rest_api_view (errors wrapped as 401
// UNAUTHORIZED with WWW-Authenticate) and authenticate_log_and_execute_json
// (errors raised as they are); zerver/lib/exceptions.py
// RealmDeactivatedError.
func TestAuthRefusals(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	session := func(u User) []string {
		sid, csrf := e.srv.RealmFor("").sessionFor(u)
		return []string{"Cookie: sessionid=" + sid + "; csrftoken=" + csrf, "X-CSRFToken: " + csrf}
	}
	check := func(name string, r resp, status int, body, wwwAuth string) {
		t.Helper()
		if r.status != status || r.body != body || r.header.Get("Www-Authenticate") != wwwAuth {
			t.Errorf("%s: %d %q %q, want %d %q %q", name, r.status, r.body, r.header.Get("Www-Authenticate"), status, body, wwwAuth)
		}
	}
	e.rm.SetIncomingWebhook(c.bot.ID, true)
	check("webhook bot /api", e.request("POST", presencePath, "status=active", "Authorization: "+e.rm.BasicAuth(c.bot.ID)),
		401, errBody("This API is not available to incoming webhook bots.", "UNAUTHORIZED"), `Basic realm="zulip"`)
	check("webhook bot /json", e.request("POST", "/json/users/me/presence", "status=active", session(c.bot)...),
		400, errBody("Webhook bots can only access webhooks", "BAD_REQUEST"), "")

	other := e.srv.AddRealm("other.example.com")
	stranger := other.AddUser("stranger@other.example.com", "Stranger", RoleMember)
	sid, csrf := other.NewSession(stranger.ID)
	check("session of another realm", e.request("POST", "/json/users/me/presence", "status=active", "Cookie: sessionid="+sid+"; csrftoken="+csrf, "X-CSRFToken: "+csrf),
		400, errBody("Account is not associated with this subdomain", "BAD_REQUEST"), "")

	// authenticated_json_view rate-limits before validate_account_and_subdomain:
	// the refusal counts, carries the count, and a session over the limit
	// gets 429 rather than the refusal.
	other.SetSettings(Settings{RateLimit: true})
	e.rm.SetSettings(Settings{RateLimit: true})
	for i := 1; i <= rateMax; i++ {
		r := e.request("POST", "/json/users/me/presence", "status=active", "Cookie: sessionid="+sid+"; csrftoken="+csrf, "X-CSRFToken: "+csrf)
		if r.status != 400 || r.header.Get("X-RateLimit-Remaining") != itoa(rateMax-i) {
			t.Fatalf("refusal %d of another realm's session: %d, remaining %q", i, r.status, r.header.Get("X-RateLimit-Remaining"))
		}
	}
	if r := e.request("POST", "/json/users/me/presence", "status=active", "Cookie: sessionid="+sid+"; csrftoken="+csrf, "X-CSRFToken: "+csrf); r.status != 429 {
		t.Fatalf("another realm's session over the limit: %d %s", r.status, r.body)
	}
	e.rm.SetSettings(Settings{})

	hamletSession := session(c.hamlet)
	e.rm.DeactivateRealm()
	check("deactivated realm /api", e.post(c.hamlet, "status=active"),
		401, errBody("This organization has been deactivated", "UNAUTHORIZED"), `Basic realm="zulip"`)
	// do_deactivate_realm deletes the sessions.
	if r := e.request("POST", "/json/users/me/presence", "status=active", hamletSession...); r.status != 401 || !strings.Contains(r.body, notLoggedIn) {
		t.Errorf("old session: %d %s", r.status, r.body)
	}
	check("deactivated realm /json", e.request("POST", "/json/users/me/presence", "status=active", session(c.othello)...),
		401, errBody("This organization has been deactivated", "REALM_DEACTIVATED"), "")
	e.rm.ReactivateRealm()
	if r := e.post(c.hamlet, "status=active"); r.status != 200 {
		t.Errorf("reactivated: %d %s", r.status, r.body)
	}
}

// sessionFor logs u in, for tests.
func (r *Realm) sessionFor(u User) (string, string) {
	return r.NewSession(u.ID)
}

// TestLocaleHeaders: zerver/middleware.py LocaleMiddleware.process_response
// patches Vary with Accept-Language and sets Content-Language to the
// request's language (Django's get_language_from_request) on every answer,
// errors included; SessionMiddleware adds Cookie when the session was
// read: by authentication on /json, and by LogRequests.process_response
// (request.user) for any answer no authentication named a requester for,
// such as an /api refusal or a 404.
func TestLocaleHeaders(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.rm.SetLanguage(c.hamlet.ID, "de")
	check := func(name string, r resp, vary, lang string) {
		t.Helper()
		want := []string{vary}
		if r.status == http.StatusOK || r.status == http.StatusNotFound {
			// nginx's gzip_vary adds a line of its own to the answers
			// its gzip filter takes (gzip.go), not to 401s.
			want = append(want, "Accept-Encoding")
		}
		if got := r.header.Values("Vary"); !slices.Equal(got, want) || r.header.Get("Content-Language") != lang {
			t.Errorf("%s: Vary %q Content-Language %q, want %q %q", name, got, r.header.Get("Content-Language"), want, lang)
		}
	}
	check("api", e.post(c.hamlet, "status=active"), "Accept-Language", "en")
	check("api error", e.request("POST", presencePath, "status=active", basic("x:y")), "Accept-Language, Cookie", "en")
	check("accept-language", e.request("POST", presencePath, "status=active", "Authorization: "+e.rm.BasicAuth(c.hamlet.ID), "Accept-Language: xx, fr-CA;q=0.8, de;q=0.9"), "Accept-Language", "de")
	check("generic", e.request("GET", "/api/v1/users/me", "", "Authorization: "+e.rm.BasicAuth(c.hamlet.ID), "Accept-Language: fr-CA"), "Accept-Language", "fr")
	sid, csrf := e.rm.NewSession(c.hamlet.ID)
	cookies := "Cookie: sessionid=" + sid + "; csrftoken=" + csrf + "; " + e.rm.LanguageCookie(c.hamlet.ID)
	check("web app session", e.request("POST", "/json/users/me/presence", "status=active", cookies, "X-CSRFToken: "+csrf), "Accept-Language, Cookie", "de")
	check("json without session", e.request("POST", "/json/users/me/presence", "status=active"), "Accept-Language, Cookie", "en")
	check("not found", e.request("GET", "/api/v1/nowhere", ""), "Accept-Language, Cookie", "en")
	check("api 405", e.request("PUT", presencePath, "status=active", "Authorization: "+e.rm.BasicAuth(c.hamlet.ID)), "Accept-Language, Cookie", "en")
}

// TestContentLanguageVariants: Django's get_language_from_request over
// its default LANGUAGES, which Zulip keeps (LANG_INFO fallbacks, the code
// cut at each "-", the first variant of the generic language, an
// Accept-Language that does not parse whole counting for nothing). The
// expected values are what Django's own function returned for each
// header and cookie.
func TestContentLanguageVariants(t *testing.T) {
	for _, tc := range []struct{ accept, cookie, want string }{
		{accept: "pt-PT", want: "pt"},
		{accept: "pt-br", want: "pt-br"},
		{accept: "zh-TW", want: "zh-hant"},
		{accept: "zh-CN", want: "zh-hans"},
		{accept: "zh", want: "zh-hans"},
		{accept: "en-AU", want: "en-au"},
		{accept: "en-US", want: "en"},
		{accept: "fr-CA", want: "fr"},
		{accept: "es-419", want: "es"},
		{accept: "sr-Latn-RS", want: "sr-latn"},
		{accept: "xx, de;q=.5", want: "en"},
		{accept: "xx, de;q=0.5", want: "de"},
		{accept: "", want: "en"},
		{accept: "de;q=0.5, fr;q=0.9", want: "fr"},
		{accept: "*, de", want: "en"},
		{accept: "de-DE,de;q=0.9", want: "de"},
		{accept: "fr-ch, fr;q=0.9, en;q=0.8, de;q=0.7, *;q=0.5", want: "fr"},
		{accept: "en;q=1.5", want: "en"},
		{accept: "EN-gb", want: "en-gb"},
		{accept: "zh-Hant-TW", want: "zh-hant"},
		{accept: "x-klingon", want: "en"},
		{accept: "i-klingon, it", want: "it"},
		{accept: "de , fr", want: "de"},
		{cookie: "PT", want: "PT"},
		{cookie: "pt-PT", want: "pt"},
		{cookie: "de", want: "de"},
		{cookie: "zz", want: "en"},
		{cookie: "fr-CA", want: "fr"},
		{cookie: "Zh-TW", want: "en"},
	} {
		r := httptest.NewRequest("GET", "/api/v1/users/me", nil)
		if tc.accept != "" {
			r.Header.Set("Accept-Language", tc.accept)
		}
		if tc.cookie != "" {
			r.Header.Set("Cookie", languageCookie+"="+tc.cookie)
		}
		if got := requestLanguage(r); got != tc.want {
			t.Errorf("Accept-Language %q, cookie %q: %q, want %q", tc.accept, tc.cookie, got, tc.want)
		}
	}
}
