package zuliptest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// sim sends a control request to the realm of host and decodes the answer.
func sim(t *testing.T, e *env, host, method, path, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, e.ts.URL+path, strings.NewReader(body))
	if host != "" {
		req.Host = host
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if ct := res.Header.Get("Content-Type"); res.StatusCode != 405 && ct != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, ct)
	}
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	dec.Decode(&m)
	return res.StatusCode, m
}

func TestControlAPI(t *testing.T) {
	e := newEnv(t)
	const host = "chat.example.com"
	ok := func(status int, m map[string]any) map[string]any {
		t.Helper()
		if status != 200 {
			t.Fatalf("status %d: %v", status, m)
		}
		return m
	}

	if m := ok(sim(t, e, "", "POST", "/_sim/realms", `{"host":"Chat.Example.com:443"}`)); m["host"] != host {
		t.Fatalf("realm %v", m)
	}
	rm := e.srv.RealmFor(host)
	if rm == e.rm {
		t.Fatal("realm not created")
	}

	m := ok(sim(t, e, host, "POST", "/_sim/users", `{"email":"h@x","full_name":"H","role":"member"}`))
	hid := m["user_id"].(json.Number).String()
	key := m["api_key"].(string)
	if len(key) != 32 || m["email"] != "h@x" {
		t.Fatalf("user %v", m)
	}
	ok(sim(t, e, host, "POST", "/_sim/users", `{"email":"g@x","full_name":"G","role":"guest"}`))
	gid := e.srv.RealmFor(host).Users()[1].ID
	if status, _ := sim(t, e, host, "POST", "/_sim/users", `{"email":"h@x"}`); status != 400 {
		t.Fatal("duplicate email accepted")
	}
	if status, _ := sim(t, e, host, "POST", "/_sim/users", `{"email":"b@x","role":"admin"}`); status != 400 {
		t.Fatal("bad role accepted")
	}
	if status, _ := sim(t, e, host, "POST", "/_sim/users", `{"emial":"b@x"}`); status != 400 {
		t.Fatal("unknown field accepted")
	}

	users := ok(sim(t, e, host, "GET", "/_sim/users", ""))["users"].([]any)
	if len(users) != 2 || users[1].(map[string]any)["role"] != "guest" || users[0].(map[string]any)["presence_enabled"] != true {
		t.Fatalf("users %v", users)
	}
	if len(ok(sim(t, e, "", "GET", "/_sim/users", ""))["users"].([]any)) != 0 {
		t.Fatal("the default realm sees another realm's users")
	}

	ok(sim(t, e, host, "POST", "/_sim/users/"+hid+"/presence_enabled", `{"value":false}`))
	if rm.byIDForTest(hid).presenceEnabled {
		t.Fatal("presence_enabled not set")
	}
	if status, _ := sim(t, e, host, "POST", "/_sim/users/"+hid+"/presence_enabled", `{}`); status != 400 {
		t.Fatal("missing value accepted")
	}
	ok(sim(t, e, host, "POST", "/_sim/users/"+hid+"/presence_enabled", `{"value":true}`))
	row := ok(sim(t, e, host, "GET", "/_sim/users/"+hid+"/presence_row", ""))
	if row["exists"] != true || row["last_active"] == nil {
		t.Fatalf("enabling did not write: %v", row)
	}
	ok(sim(t, e, host, "POST", "/_sim/users/"+hid+"/presence_row", `{"last_connected":1656958539.5,"last_active":null}`))
	row = ok(sim(t, e, host, "GET", "/_sim/users/"+hid+"/presence_row", ""))
	if row["last_connected"].(json.Number).String() != "1656958539.5" || row["last_active"] != nil {
		t.Fatalf("row %v", row)
	}

	newKey := ok(sim(t, e, host, "POST", "/_sim/users/"+hid+"/regenerate_api_key", ""))["api_key"].(string)
	if newKey == key || rm.Users()[0].APIKey != newKey {
		t.Fatal("key not regenerated")
	}

	sess := ok(sim(t, e, host, "POST", "/_sim/sessions", `{"user_id":`+hid+`}`))
	sid, csrf := sess["sessionid"].(string), sess["csrftoken"].(string)
	req, _ := http.NewRequest("POST", e.ts.URL+"/json/users/me/presence", strings.NewReader("status=idle"))
	req.Host = host
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Cookie", "sessionid="+sid+"; csrftoken="+csrf)
	req.Header.Set("X-CSRFToken", csrf)
	if res, _ := http.DefaultClient.Do(req); res.StatusCode != 200 {
		t.Fatalf("session from the control API: %d", res.StatusCode)
	}
	ok(sim(t, e, host, "DELETE", "/_sim/sessions/"+sid, ""))
	if len(rm.sessionsForTest()) != 0 {
		t.Fatal("session not deleted")
	}

	ok(sim(t, e, host, "POST", "/_sim/access", `{"user_ids":[`+hid+`,`+itoa(int(gid))+`]}`))
	if status, _ := sim(t, e, host, "POST", "/_sim/access", `{"user_ids":[1]}`); status != 400 {
		t.Fatal("bad access accepted")
	}

	st := ok(sim(t, e, host, "POST", "/_sim/settings", `{"rate_limit":true}`))
	if st["rate_limit"] != true || st["presence_disabled"] != false || st["can_access_all_users_group_limits_presence"] != false {
		t.Fatalf("settings %v", st)
	}
	ok(sim(t, e, host, "POST", "/_sim/settings", `{"presence_disabled":true}`))
	if got := rm.Settings(); !got.RateLimit || !got.PresenceDisabled {
		t.Fatalf("settings %+v", got)
	}
	if st = ok(sim(t, e, host, "GET", "/_sim/settings", "")); st["presence_disabled"] != true {
		t.Fatalf("GET settings %v", st)
	}

	before := rm.Now()
	clk := ok(sim(t, e, host, "POST", "/_sim/clock", `{"advance_seconds":90.5}`))
	if got := rm.Now().Sub(before); got != 90500*time.Millisecond {
		t.Fatalf("clock moved %v", got)
	}
	if clk["now"].(json.Number).String() != pyFloat(pyTime(rm.Now())) {
		t.Fatalf("clock %v", clk)
	}
	if e.rm.Now() != e.clock.Now() {
		t.Fatal("advancing one realm moved another")
	}

	stats := ok(sim(t, e, host, "GET", "/_sim/stats", ""))
	if stats["requests"].(map[string]any)["presence"].(json.Number).String() != "1" {
		t.Fatalf("stats %v", stats)
	}
	ok(sim(t, e, host, "POST", "/_sim/stats/reset", ""))
	if rm.Stats().Requests["presence"] != 0 {
		t.Fatal("stats not reset")
	}

	ok(sim(t, e, host, "POST", "/_sim/users/"+hid+"/deactivate", ""))
	if rm.byIDForTest(hid).active {
		t.Fatal("not deactivated")
	}
	ok(sim(t, e, host, "POST", "/_sim/users/"+hid+"/reactivate", ""))
	if !rm.byIDForTest(hid).active {
		t.Fatal("not reactivated")
	}

	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/_sim/users/999/deactivate", ""},
		{"GET", "/_sim/nope", ""},
		{"GET", "/_sim", ""},
		{"POST", "/_sim/sessions", `{"user_id":999}`},
	} {
		if status, m := sim(t, e, host, tc.method, tc.path, tc.body); status != 404 || m["error"] == nil {
			t.Errorf("%s %s: %d %v", tc.method, tc.path, status, m)
		}
	}
	if status, _ := sim(t, e, "", "POST", "/_sim/realms", `{}`); status != 400 {
		t.Error("empty host accepted")
	}
	if status, _ := sim(t, e, host, "POST", "/_sim/users/abc/deactivate", ""); status != 400 {
		t.Error("bad id accepted")
	}
}

func (r *Realm) byIDForTest(id string) *user {
	defer r.lock()()
	n, _ := json.Number(id).Int64()
	u := *r.byID[n]
	return &u
}

func (r *Realm) sessionsForTest() map[string]*session {
	defer r.lock()()
	out := map[string]*session{}
	for k, v := range r.sessions {
		out[k] = v
	}
	return out
}
