package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// Zulip's presence routes.
const (
	apiPresencePath  = "/api/v1/users/me/presence"
	jsonPresencePath = "/json/users/me/presence"
)

// job is one client request, sent to both sides in the same virtual
// second.
type job struct {
	c       *client
	t       *tab // the web tab, whose cursor goes in last_update_id
	form    url.Values
	poll    bool // not ping_only: the answer carries presences
	modern  bool // carries last_update_id
	unusual bool // has a parameter the module passes through untouched
	ans     [numSides]answer
	up      [numSides]int           // requests that reached the server
	upBytes [numSides]int           // raw JSON bytes of the upstream answers
	upWire  [numSides]int           // the same answers' bytes on the wire
	cpu     [numSides]time.Duration // server thread CPU
	sec     int                     // the virtual second it was sent in
	rows    int                     // entries in the direct answer
	err     error                   // the comparator's verdict
	row     [numSides]zuliptest.Row // the sender's row after the request
	cursor  [numSides]int64         // the last_update_id sent to each side (web tabs)
	hi      int64                   // the direct realm's last update id after its answer
	asOf    asOf                    // how the shared-mode checker accepted the answer
}

func newJob(c *client, t *tab, f url.Values) *job {
	return &job{
		c:       c,
		t:       t,
		form:    f,
		poll:    f.Get("ping_only") != "true",
		modern:  t != nil,
		unusual: f.Has("note"),
	}
}

// converted reports whether the module may serve the answer from its
// snapshot: a full poll, which lets presence_last_update_id differ.
func (j *job) converted() bool { return j.poll && !j.modern }

// poller is the poller whose view the ideal tracks.
func (j *job) poller() *poller {
	if j.t != nil {
		return &j.t.poller
	}
	return &j.c.poller
}

// request builds the job's HTTP request for one side.
func (j *job) request(s side) *http.Request {
	f := j.form
	if j.modern {
		f = url.Values{}
		for k, v := range j.form {
			f[k] = v
		}
		j.cursor[s] = j.t.cursor[s]
		f.Set("last_update_id", strconv.FormatInt(j.cursor[s], 10))
	}
	body, ctype := zuliptest.EncodeForm(f, j.c.kind == KindScript && j.c.script.multipart)
	path := apiPresencePath
	if j.c.kind == KindWeb {
		path = jsonPresencePath
	}
	r := httptest.NewRequest(http.MethodPost, "http://zulip.example"+path, bytes.NewReader(body))
	r.Header.Set("Content-Type", ctype)
	// Every real Zulip client accepts gzip, which Zulip's nginx (and
	// zuliptest's model of it) sends.
	r.Header.Set("Accept-Encoding", "gzip")
	if j.c.kind == KindWeb {
		r.AddCookie(&http.Cookie{Name: "sessionid", Value: j.c.session[s]})
		r.AddCookie(&http.Cookie{Name: "csrftoken", Value: j.c.csrf[s]})
		r.Header.Set("X-CSRFToken", j.c.csrf[s])
	} else {
		r.Header.Set("Authorization", j.c.user.basic[s])
	}
	return r
}

// learn moves the tab's cursor on side s, as the web app does after a
// successful poll.
func (j *job) learn(s side) {
	if j.t == nil || !j.poll || j.ans[s].status != http.StatusOK {
		return
	}
	if id, ok := lastUpdateID(j.ans[s].body); ok {
		j.t.cursor[s] = id
	}
}

var cursorKey = []byte(`"presence_last_update_id":`)

// lastUpdateID reads presence_last_update_id from a compact answer.
func lastUpdateID(body []byte) (int64, bool) {
	i, n, ok := cursorSpan(body)
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(string(body[i:i+n]), 10, 64)
	return id, err == nil
}

// answer is one HTTP answer.
type answer struct {
	status int
	header http.Header
	body   []byte
}

// recorder is a minimal ResponseWriter; its body buffer comes from the
// side's free list, so that megabyte answers do not churn the heap.
type recorder struct {
	header http.Header
	status int
	body   []byte
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
}

func (r *recorder) Write(p []byte) (int, error) {
	r.WriteHeader(http.StatusOK)
	r.body = append(r.body, p...)
	return len(p), nil
}

// compareJob checks a proxied answer against the direct one with the
// fidelity comparator (design §6).
func compareJob(j *job, scratch *[]byte) error {
	d, p := j.ans[sideDirect], j.ans[sideModule]
	pBody := p.body
	if j.converted() {
		pBody = withCursorOf(d.body, p.body, scratch)
	}
	return zuliptest.Compare(zuliptest.Answer{Status: d.status, Header: d.header, Body: d.body}, zuliptest.Answer{Status: p.status, Header: p.header, Body: pBody}, j.converted())
}

// withCursorOf returns the proxied body with the direct answer's
// presence_last_update_id, provided the proxied one is an integer; else the
// proxied body unchanged. For a converted answer Compare accepts any
// integer there, so its verdict is the same either way; but with equal
// cursors it can take its byte-equality fast path instead of splitting and
// sorting two megabyte tables.
func withCursorOf(direct, proxied []byte, scratch *[]byte) []byte {
	di, dn, ok := cursorSpan(direct)
	if !ok {
		return proxied
	}
	pi, pn, ok := cursorSpan(proxied)
	if !ok {
		return proxied
	}
	if _, err := strconv.ParseInt(string(proxied[pi:pi+pn]), 10, 64); err != nil {
		return proxied
	}
	b := append((*scratch)[:0], proxied[:pi]...)
	b = append(b, direct[di:di+dn]...)
	b = append(b, proxied[pi+pn:]...)
	*scratch = b
	return b
}

// cursorSpan finds the value of presence_last_update_id in a compact
// answer: its offset and length.
func cursorSpan(body []byte) (int, int, bool) {
	i := bytes.LastIndex(body, cursorKey)
	if i < 0 {
		return 0, 0, false
	}
	i += len(cursorKey)
	n := bytes.IndexAny(body[i:], ",}")
	return i, n, n > 0
}
