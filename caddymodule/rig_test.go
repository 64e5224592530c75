package caddymodule

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/zulip-presence/caddy-zulip-presence/internal/twinrig"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// provision provisions a handler as Caddy would, released at test end.
func provision(t testing.TB, h Handler) *Handler {
	t.Helper()
	noVerification(&h)
	_, release, err := twinrig.Provision(&h)
	return keep(t, &h, release, err)
}

// provisionOnClock provisions a handler on the twin's clock, released at
// test end.
func (tw *twin) provisionOnClock(h Handler) *Handler {
	tw.t.Helper()
	noVerification(&h)
	_, release, err := tw.Provision(&h)
	return keep(tw.t, &h, release, err)
}

// keep silences a freshly provisioned handler, whose default Caddy logger
// writes debug lines, and releases it at test end.
func keep(t testing.TB, h *Handler, release func() error, err error) *Handler {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	h.logger = zap.NewNop()
	t.Cleanup(func() {
		if err := release(); err != nil {
			t.Error(err)
		}
	})
	return h
}

// twin is the twin rig (internal/twinrig) for one test: the handler under
// test sits in front of the proxied server. Every operation is done to
// both servers, so their answers and their rows can be compared.
type twin struct {
	*twinrig.Rig
	t *testing.T
	h *Handler
	// wrapProxied, when set, stands in front of the proxied server: a
	// server that answers unlike zuliptest.
	wrapProxied func(http.Handler) http.Handler
}

func newTwin(t *testing.T, cfg Handler) *twin {
	tw := &twin{Rig: twinrig.New(), t: t}
	if cfg.CacheName == "" {
		cfg.CacheName = t.Name()
	}
	tw.h = tw.provisionOnClock(cfg)
	return tw
}

// twinUser is one user, created alike on both servers.
type twinUser struct {
	id      int64
	email   string
	direct  zuliptest.User
	proxied zuliptest.User
}

func (tw *twin) addUser(email string, role zuliptest.Role) twinUser {
	tw.t.Helper()
	d, p, err := tw.AddUser(email, strings.Split(email, "@")[0], role)
	if err != nil {
		tw.t.Fatal(err)
	}
	return twinUser{id: d.ID, email: email, direct: d, proxied: p}
}

// client is one Zulip client: its credentials on each server, and how it
// encodes its requests.
type client struct {
	name      string
	json      bool // /json with a session cookie, else /api/v1 with Basic
	multipart bool
	user      twinUser
	authD     string // Basic header, or session id
	authP     string
	csrfD     string
	csrfP     string
}

func (tw *twin) apiClient(name string, u twinUser) *client {
	return &client{
		name:  name,
		user:  u,
		authD: tw.Direct.DefaultRealm().BasicAuth(u.id),
		authP: tw.Proxied.DefaultRealm().BasicAuth(u.id),
	}
}

func (tw *twin) browser(name string, u twinUser) *client {
	c := &client{name: name, json: true, user: u}
	c.authD, c.csrfD = tw.Direct.DefaultRealm().NewSession(u.id)
	c.authP, c.csrfP = tw.Proxied.DefaultRealm().NewSession(u.id)
	return c
}

// request builds the client's presence POST for one side.
func (c *client) request(proxied bool, form url.Values) *http.Request {
	auth, csrf := c.authD, c.csrfD
	if proxied {
		auth, csrf = c.authP, c.csrfP
	}
	path := apiPresencePath
	if c.json {
		path = jsonPresencePath
	}
	body, ctype := zuliptest.EncodeForm(form, c.multipart)
	r := httptest.NewRequest(http.MethodPost, "http://zulip.example"+path, bytes.NewReader(body))
	r.Header.Set("Content-Type", ctype)
	if c.json {
		r.AddCookie(&http.Cookie{Name: "sessionid", Value: auth})
		r.AddCookie(&http.Cookie{Name: "csrftoken", Value: csrf})
		r.Header.Set("X-CSRFToken", csrf)
	} else {
		r.Header.Set("Authorization", auth)
	}
	return r
}

// answer is one HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

func (tw *twin) serveDirect(r *http.Request) answer {
	rec := httptest.NewRecorder()
	tw.Direct.ServeHTTP(rec, r)
	return answer{rec.Code, rec.Header(), rec.Body.Bytes()}
}

// serveProxied runs r through the module and counts the presence writes
// that reached upstream (the reads the module makes for itself, such as
// GET /users/me, are not writes).
func (tw *twin) serveProxied(r *http.Request) (answer, int) {
	var upstream int
	var server http.Handler = tw.Proxied
	if tw.wrapProxied != nil {
		server = tw.wrapProxied(server)
	}
	next := twinrig.Next(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := presenceFamily(r); ok {
			upstream++
		}
		server.ServeHTTP(w, r)
	}))
	rec := httptest.NewRecorder()
	if err := tw.h.ServeHTTP(rec, r, next); err != nil {
		tw.t.Fatalf("ServeHTTP: %v", err)
	}
	// A verification sends the original after the answer; it counts in
	// upstream, and happens within the request's virtual second.
	tw.h.WaitVerifications()
	return answer{rec.Code, rec.Header(), rec.Body.Bytes()}, upstream
}

// post sends the same poll from the client to both sides, checks that the
// answers agree as design §6 requires, and returns the direct answer and
// how many requests reached the proxied server.
func (tw *twin) post(c *client, form url.Values) (answer, int) {
	tw.t.Helper()
	d := tw.serveDirect(c.request(false, form))
	p, n := tw.serveProxied(c.request(true, form))
	if err := sameAnswer(d, p, isFullPoll(form)); err != nil {
		tw.t.Fatalf("%s %s at %s: %v\ndirect:  %d %s\nproxied: %d %s", c.name, form.Encode(), tw.Clock.Now().Format(time.TimeOnly), err, d.status, d.body, p.status, p.body)
	}
	return d, n
}

// sameAnswer checks a proxied answer against the direct one, as design §6
// allows them to differ (zuliptest.Compare).
func sameAnswer(d, p answer, converted bool) error {
	return zuliptest.Compare(zuliptest.Answer{Status: d.status, Header: d.header, Body: d.body}, zuliptest.Answer{Status: p.status, Header: p.header, Body: p.body}, converted)
}

// sameRows checks that both servers hold the same presence rows.
func (tw *twin) sameRows(users ...twinUser) {
	tw.t.Helper()
	for _, u := range users {
		if d, p := tw.Rows(u.id); !twinrig.SameRow(d, p) {
			tw.t.Fatalf("rows of %s differ at %s:\ndirect:  %+v\nproxied: %+v", u.email, tw.Clock.Now().Format(time.TimeOnly), d, p)
		}
	}
}

// isFullPoll reports whether the module may convert this request.
func isFullPoll(f url.Values) bool {
	return f.Get("ping_only") != "true" && !f.Has("last_update_id")
}

func form(kv ...string) url.Values {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return v
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// parseQuery keeps the bytes of odd values (quotes) that url.Values would
// re-encode anyway; it exists so test tables read like request bodies.
func parseQuery(s string) (url.Values, error) { return url.ParseQuery(s) }

// noVerification turns verify_rate off unless a test sets it: the tests
// drive a virtual clock, on which a verification sent after the answer
// would land whenever the clock stands next.
func noVerification(h *Handler) {
	if h.VerifyRate == nil {
		off := 0.0
		h.VerifyRate = &off
	}
}
