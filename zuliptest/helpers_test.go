package zuliptest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest/simclock"
)

// t0 has a sub-second part so that truncation bugs show.
var t0 = time.Date(2022, 7, 4, 18, 15, 39, 628715500, time.UTC)

func newClock() *simclock.Clock { return simclock.New(t0) }

// env is a server on a real HTTP listener with a fake clock.
type env struct {
	t     *testing.T
	clock *simclock.Clock
	srv   *Server
	ts    *httptest.Server
	rm    *Realm
}

func newEnv(t *testing.T) *env {
	t.Helper()
	clock := newClock()
	srv := New(clock.Now)
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &env{t: t, clock: clock, srv: srv, ts: ts, rm: srv.DefaultRealm()}
}

// cast is the usual set of users of Zulip's presence tests.
type cast struct {
	hamlet, othello, iago, cordelia, polonius, bot User
}

// newCast adds the cast, then moves the clock a month on so that their
// date_joined is old, as in Zulip's test fixtures.
func (e *env) newCast() cast {
	c := cast{
		hamlet:   e.rm.AddUser("hamlet@zulip.com", "King Hamlet", RoleMember),
		othello:  e.rm.AddUser("othello@zulip.com", "Othello", RoleMember),
		iago:     e.rm.AddUser("iago@zulip.com", "Iago", RoleMember),
		cordelia: e.rm.AddUser("cordelia@zulip.com", "Cordelia", RoleMember),
		polonius: e.rm.AddUser("polonius@zulip.com", "Polonius", RoleGuest),
		bot:      e.rm.AddUser("webhook-bot@zulip.com", "Webhook Bot", RoleBot),
	}
	e.clock.Advance(30 * 24 * time.Hour)
	return c
}

type resp struct {
	status int
	header http.Header
	body   string
}

// request sends a request; headers are "Name: value" strings.
func (e *env) request(method, path, body string, headers ...string) resp {
	e.t.Helper()
	r, err := e.fetch(method, path, body, headers...)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// fetch is request for other goroutines than the test's, which must not
// call t.Fatal: it returns what goes wrong.
func (e *env) fetch(method, path, body string, headers ...string) (resp, error) {
	req, err := http.NewRequest(method, e.ts.URL+path, strings.NewReader(body))
	if err != nil {
		return resp{}, err
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Add(k, v)
	}
	if _, ok := req.Header["Content-Type"]; !ok && body != "" {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := client.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body) // a cut body shows in what the caller checks
	return resp{status: res.StatusCode, header: res.Header, body: string(b)}, nil
}

// post is POST /api/v1/users/me/presence as u.
func (e *env) post(u User, form string) resp {
	e.t.Helper()
	return e.request("POST", "/api/v1/users/me/presence", form, "Authorization: "+e.rm.BasicAuth(u.ID))
}

// get is a GET to the API as u.
func (e *env) get(u User, path string) resp {
	e.t.Helper()
	return e.request("GET", "/api/v1/"+path, "", "Authorization: "+e.rm.BasicAuth(u.ID))
}

// mustJSON decodes a 200 answer, keeping numbers as json.Number.
func (r resp) mustJSON(t *testing.T) map[string]any {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("status %d, body %s", r.status, r.body)
	}
	return decodeJSON(t, r.body)
}

func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("bad JSON %q: %v", s, err)
	}
	return m
}

func (r resp) presences(t *testing.T) map[string]any {
	t.Helper()
	return r.mustJSON(t)["presences"].(map[string]any)
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sorted(ss ...string) []string {
	sort.Strings(ss)
	return ss
}

func id(u User) string {
	return strconv.FormatInt(u.ID, 10)
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (r resp) lastUpdateID(t *testing.T) string {
	t.Helper()
	return r.mustJSON(t)["presence_last_update_id"].(json.Number).String()
}

// orderedKeys lists the keys of the JSON object s in document order.
func orderedKeys(t *testing.T, s string) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %q", s)
	}
	var out []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func ts(t time.Time) string {
	return strconv.FormatInt(t.Unix(), 10)
}

func serverTS(t time.Time) string {
	return pyFloat(pyTime(t))
}
