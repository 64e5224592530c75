package zuliptest

import (
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestUsersEndpoints(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.rm.Deactivate(c.cordelia.ID)
	r := e.get(c.hamlet, "users")
	// format_user_row's keys in its order. Every fixture user joined at
	// the same instant (helpers_test.go); 11.x sends it to the minute.
	member := func(email string, id int64, name string, guest, active bool) string {
		role := "400"
		if guest {
			role = "600"
		}
		return `{"email":"` + email + `","user_id":` + strconv.FormatInt(id, 10) + `,"avatar_version":1,"is_admin":false,"is_owner":false,` +
			`"is_guest":` + strconv.FormatBool(guest) + `,"role":` + role + `,"is_bot":false,"full_name":"` + name + `","timezone":"",` +
			`"is_active":` + strconv.FormatBool(active) + `,"date_joined":"2022-07-04T18:15+00:00","delivery_email":"` + email + `","avatar_url":null}`
	}
	want := `{"result":"success","msg":"","members":[` +
		member("hamlet@zulip.com", 1, "King Hamlet", false, true) + "," +
		member("othello@zulip.com", 2, "Othello", false, true) + "," +
		member("iago@zulip.com", 3, "Iago", false, true) + "," +
		member("cordelia@zulip.com", 4, "Cordelia", false, false) + "," +
		member("polonius@zulip.com", 5, "Polonius", true, true) + "," +
		`{"email":"webhook-bot@zulip.com","user_id":6,"avatar_version":1,"is_admin":false,"is_owner":false,"is_guest":false,"role":400,"is_bot":true,` +
		`"full_name":"Webhook Bot","timezone":"","is_active":true,"date_joined":"2022-07-04T18:15+00:00","delivery_email":"webhook-bot@zulip.com",` +
		`"avatar_url":null,"bot_type":1,"bot_owner_id":null}]}` + "\n"
	if r.body != want {
		t.Fatalf("GET users\n got %q\nwant %q", r.body, want)
	}
	r = e.get(c.bot, "users/me")
	want = `{"result":"success","msg":"","email":"webhook-bot@zulip.com","user_id":6,"avatar_version":1,"is_admin":false,"is_owner":false,"is_guest":false,"role":400,"is_bot":true,` +
		`"full_name":"Webhook Bot","timezone":"","is_active":true,"date_joined":"2022-07-04T18:15+00:00","delivery_email":"webhook-bot@zulip.com",` +
		`"avatar_url":"` + gravatarURL("webhook-bot@zulip.com") + `","bot_type":1,"bot_owner_id":null,"max_message_id":-1}` + "\n"
	if r.body != want {
		t.Fatalf("GET users/me\n got %q\nwant %q", r.body, want)
	}
	if r = e.get(c.hamlet, "users?client_gravatar=1"); r.status != 400 || !strings.Contains(r.body, "client_gravatar is not a boolean") {
		t.Fatalf("bad client_gravatar: %d %s", r.status, r.body)
	}
	if r = e.get(c.hamlet, "users?user_ids=[1]&client_gravatar=false"); !strings.HasSuffix(r.body, `"ignored_parameters_unsupported":["user_ids"]}`+"\n") {
		t.Fatalf("user_ids: %s", r.body)
	}
	if r = e.get(c.hamlet, "users/me?x=1"); strings.Contains(r.body, "ignored_parameters_unsupported") {
		t.Fatalf("users/me params: %s", r.body)
	}
}

func TestHostRouting(t *testing.T) {
	e := newEnv(t)
	a := e.srv.AddRealm("Chat.Example.com:8443")
	if e.srv.AddRealm("chat.example.com") != a || e.srv.RealmFor("CHAT.example.com.") != a || e.srv.RealmFor("chat.example.com:1") != a {
		t.Fatal("host normalization")
	}
	if e.srv.RealmFor("unknown.example") != e.rm || e.srv.AddRealm("") != e.rm || e.srv.RealmFor("") != e.rm {
		t.Fatal("default realm")
	}
	v6 := e.srv.AddRealm("[::1]:8080")
	if e.srv.RealmFor("[::1]") != v6 || v6.Host() != "::1" {
		t.Fatal("IPv6 host")
	}
	d := e.rm.AddUser("d@x", "D", RoleMember)
	u := a.AddUser("a@x", "A", RoleMember)
	if u.ID != d.ID+1 {
		t.Fatalf("user IDs are not server-wide: %d after %d", u.ID, d.ID)
	}
	r := e.request("GET", "/api/v1/users", "", "Authorization: "+a.BasicAuth(u.ID))
	if r.status != 401 || !strings.Contains(r.body, "Account is not associated with this subdomain") {
		t.Fatalf("wrong Host: %d %s", r.status, r.body)
	}
	body := getWithHost(t, e, "chat.example.com:9999", "/api/v1/users", a.BasicAuth(u.ID))
	if !strings.Contains(body, `"email":"a@x"`) || strings.Contains(body, `"email":"d@x"`) {
		t.Fatalf("realm A answered %s", body)
	}
	a.Advance(time.Hour)
	if got := a.Now().Sub(e.rm.Now()); got != time.Hour {
		t.Fatalf("realm clocks differ by %v", got)
	}
}

func TestStats(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	e.rm.ResetStats()
	r1 := e.post(c.hamlet, "status=active")
	r2 := e.post(c.othello, "status=active")
	r3 := e.post(c.othello, "status=bad")
	r4 := e.get(c.hamlet, "users")
	r5 := e.get(c.hamlet, "users/me")
	r6 := e.request("GET", "/api/v1/nope", "")
	r7 := e.get(c.hamlet, "realm/presence")
	r8 := e.get(c.hamlet, "users/"+id(c.othello)+"/presence")
	e.request("GET", "/_sim/stats", "")
	st := e.rm.Stats()
	want := map[string]int64{"presence": 3, "presence_error": 1, "users": 1, "users_me": 1, "other": 1, "realm_presence": 1, "user_presence": 1}
	for k, v := range want {
		if st.Requests[k] != v {
			t.Errorf("Requests[%s] = %d, want %d (%v)", k, st.Requests[k], v, st.Requests)
		}
	}
	total := 0
	for _, r := range []resp{r1, r2, r3, r4, r5, r6, r7, r8} {
		total += len(r.body)
	}
	if st.ResponseBytes != int64(total) || st.RowsReturned != 1+2+2+1 || st.RowsWritten != 2 {
		t.Errorf("stats %+v, want %d bytes, 6 rows returned, 2 written", st, total)
	}
	e.rm.ResetStats()
	if st := e.rm.Stats(); st.ResponseBytes != 0 || len(st.Requests) != 0 {
		t.Errorf("after reset %+v", st)
	}
}

func TestPyFloat(t *testing.T) {
	// Expected strings are CPython's repr().
	for _, tc := range []struct {
		f    float64
		want string
	}{
		{1656958539.6287155, "1656958539.6287155"},
		{1656958539, "1656958539.0"},
		{0.5, "0.5"},
		{60, "60.0"},
		{0, "0.0"},
		{math.Copysign(0, -1), "-0.0"},
		{1e16, "1e+16"},
		{1e15, "1000000000000000.0"},
		{1.5e-5, "1.5e-05"},
		{0.0001, "0.0001"},
		{123.25, "123.25"},
		{59.99999, "59.99999"},
	} {
		if got := pyFloat(tc.f); got != tc.want {
			t.Errorf("pyFloat(%v) = %q, want %q", tc.f, got, tc.want)
		}
	}
	if got := pyTime(time.Unix(1656958539, 628715500)); pyFloat(got) != "1656958539.6287155" {
		t.Errorf("pyTime: %s", pyFloat(got))
	}
	if got := pyTime(time.Unix(1656958539, 0)); pyFloat(got) != "1656958539.0" {
		t.Errorf("pyTime integral: %s", pyFloat(got))
	}
}

func TestJSONStrings(t *testing.T) {
	in := "a\"b\\c\n\r\t\b\f\x01\x1f<>&\u2028é😀"
	want := `"a\"b\\c\n\r\t\b\f\u0001\u001f<>&` + "\u2028é😀" + `"`
	if got := string(appendJSONString(nil, in)); got != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

func TestPyTimestamp(t *testing.T) {
	for _, tc := range []struct {
		t    time.Time
		want int64
	}{
		{time.Unix(1656958539, 999999000), 1656958539},
		{time.Unix(1656958539, 0), 1656958539},
		{time.Unix(-1, 500000000), 0},                                            // int() truncates toward zero
		{time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC), 253402300800}, // the float rounds up
	} {
		if got := pyTimestamp(tc.t); got != tc.want {
			t.Errorf("pyTimestamp(%v) = %d, want %d", tc.t, got, tc.want)
		}
	}
}

// getWithHost sends a GET with a chosen Host header.
func getWithHost(t *testing.T, e *env, host, path, auth string) string {
	t.Helper()
	req, _ := http.NewRequest("GET", e.ts.URL+path, nil)
	req.Host = host
	req.Header.Set("Authorization", auth)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return string(b)
}
