package zuliptest

import (
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// Keys of Stats.Requests.
const (
	statPresence      = "presence"
	statPresenceError = "presence_error"
	statUsers         = "users"
	statUsersMe       = "users_me"
	statRealmPresence = "realm_presence"
	statUserPresence  = "user_presence"
	statOther         = "other"
)

// route is one REST endpoint: what rest_path registers in zproject/urls.py.
type route struct {
	stat    string
	methods []string // supported methods in registration order
	handle  func(c *call, u *user) reply
	arg     string // the <user_id_or_email> path argument
}

// getMethods is a GET endpoint; rest_dispatch adds HEAD to every GET.
var getMethods = []string{"GET", "HEAD"}

// matchRoute resolves a path under /api/v1/ or /json/ to its endpoint.
func matchRoute(path string) (route, bool) {
	rest, ok := strings.CutPrefix(path, "/api/v1/")
	if !ok {
		rest, ok = strings.CutPrefix(path, "/json/")
	}
	if !ok {
		return route{}, false
	}
	switch rest {
	case "users/me/presence":
		return route{stat: statPresence, methods: []string{"POST"}, handle: (*call).updatePresence}, true
	case "users/me":
		return route{stat: statUsersMe, methods: getMethods, handle: (*call).getOwnUser}, true
	case "users":
		return route{stat: statUsers, methods: getMethods, handle: (*call).getUsers}, true
	case "realm/presence":
		return route{stat: statRealmPresence, methods: getMethods, handle: (*call).getRealmPresence}, true
	}
	// users/me/presence was matched above, as Django tries it first.
	if arg, ok := strings.CutPrefix(rest, "users/"); ok {
		if arg, ok = strings.CutSuffix(arg, "/presence"); ok && arg != "" && !strings.Contains(arg, "/") {
			return route{stat: statUserPresence, methods: getMethods, handle: (*call).getUserPresence, arg: arg}, true
		}
	}
	return route{}, false
}

// call is one API request on its way through rest_dispatch.
type call struct {
	rm     *Realm
	r      *http.Request
	route  route
	api    bool   // the path starts with /api
	method string // request.method, upper case
	form   form
	now    time.Time // the realm's clock when processing started
	rate   *rateState
	// sessionRead is whether the session was read, so that Vary names
	// Cookie: always, but for /api requests whose Basic credentials
	// passed (process_client then names the requester for the log).
	sessionRead bool
}

// reply is a response computed under the server lock. A presence view is
// rendered after the lock is released, from a snapshot of the rows.
type reply struct {
	status     int
	header     http.Header
	body       []byte
	view       *presenceView
	rows       int // presence rows returned
	neverCache bool
	// gzipVary and gzipped are what nginx's gzip filter made of the
	// answer: Vary: Accept-Encoding, and a compressed body.
	gzipVary, gzipped bool
}

// serveAPI answers one request to the Zulip API and counts it.
func (rm *Realm) serveAPI(w http.ResponseWriter, r *http.Request) {
	rt, found := matchRoute(r.URL.Path)
	// Until authentication names a requester, LogRequests.process_response
	// reads request.user for its log line, which reads the session, so
	// SessionMiddleware (before it in MIDDLEWARE, after it on the way out)
	// adds Vary: Cookie: to every refusal, 404, 405 and OPTIONS answer.
	c := &call{rm: rm, r: r, route: rt, api: strings.HasPrefix(r.URL.Path, "/api"), method: strings.ToUpper(r.Method), sessionRead: true}
	var rp reply
	if found {
		rp = c.run()
	} else {
		rp = notFound()
		rt.stat = statOther
	}
	if rp.view != nil {
		rp.body, rp.rows = rp.view.render()
	}
	// What nginx sends (gzip.go): the body, compressed for a client that
	// accepts gzip.
	wire := rp.body
	rp.gzipVary = gzipEligible(r, rp.status, rp.header, rp.body)
	if level := rm.s.GzipLevel(); level > 0 && rp.gzipVary && AcceptsGzip(r) {
		wire, rp.gzipped = compress(rp.body, level), true
	}
	// Counted before writing, so a client that has its answer also sees
	// it in the stats.
	rm.count(rt.stat, rp.status, len(rp.body), len(wire), rp.rows)
	c.writeReply(w, rp, wire)
}

// run follows rest_dispatch: OPTIONS, the method override, 405, then
// authentication and the view.
func (c *call) run() reply {
	if c.method == http.MethodOptions {
		return options(c.route.methods)
	}
	var err error
	if c.method == http.MethodPost {
		if c.form.post, err = readPost(c.r); err != nil {
			return internalError().reply()
		}
	}
	if c.form.get, err = parseQuery(decodeLatin1Fallback([]byte(c.r.URL.RawQuery))); err != nil {
		return internalError().reply()
	}
	method := c.method
	if vs := c.form.post["method"]; len(vs) > 0 {
		method = vs[len(vs)-1]
	}
	if !slices.Contains(c.route.methods, method) {
		return methodNotAllowed(c.route.methods)
	}
	s := c.rm.s
	s.mu.Lock()
	defer s.mu.Unlock()
	c.now = c.rm.nowLocked()
	u, rp := c.authenticate()
	if rp != nil {
		return *rp
	}
	return c.route.handle(c, u)
}

// writeReply writes rp with body, the bytes nginx sends for it.
func (c *call) writeReply(w http.ResponseWriter, rp reply, body []byte) {
	h := w.Header()
	for k, vs := range rp.header {
		h[k] = vs
	}
	if rp.neverCache {
		// default_never_cache_responses, for responses rest_dispatch
		// returns rather than raises.
		h.Set("Cache-Control", "max-age=0, no-cache, no-store, must-revalidate, private")
		now := c.now
		if now.IsZero() { // answered before the clock was read
			now = c.rm.Now()
		}
		h.Set("Expires", now.UTC().Format(http.TimeFormat))
	}
	// The server's own clock dates every answer, as the web server in
	// front of a real Zulip does; over real HTTP this replaces the Date
	// net/http would add from the machine's clock.
	h.Set("Date", c.rm.Now().UTC().Format(http.TimeFormat))
	c.rate.setHeaders(h)
	// LocaleMiddleware (zerver/middleware.py) on every answer, errors
	// included, then SessionMiddleware when the session was read.
	vary := []string{"Accept-Language"}
	if c.sessionRead {
		vary = append(vary, "Cookie")
	}
	h.Set("Vary", strings.Join(vary, ", "))
	if h.Get("Content-Language") == "" {
		h.Set("Content-Language", requestLanguage(c.r))
	}
	c.nginxHeaders(h, rp.status)
	// nginx's gzip_vary adds a header line of its own.
	if rp.gzipVary {
		h.Add("Vary", "Accept-Encoding")
	}
	if rp.gzipped {
		h.Set("Content-Encoding", "gzip")
		h.Del("Content-Length")
	}
	w.WriteHeader(rp.status)
	w.Write(body)
}

// nginxHeaders are what Zulip's nginx adds to every answer it proxies
// (puppet/zulip/files/nginx/zulip-include-common/headers, and
// api_headers for location /api/): X-Content-Type-Options lacks
// "always", so nginx adds it to 2xx and 3xx answers only.
func (c *call) nginxHeaders(h http.Header, status int) {
	h.Set("Strict-Transport-Security", "max-age=15768000")
	h.Set("X-Frame-Options", "DENY")
	if status >= 200 && status < 400 {
		h.Set("X-Content-Type-Options", "nosniff")
	}
	if c.api {
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Headers", "Authorization")
		h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE, PUT, PATCH, HEAD")
	}
}

// field is one key of an error body's data, with its value as JSON text.
type field struct{ key, value string }

// apiError is a JsonableError: an HTTP status and the body Zulip's
// json_response_from_error builds, key order result, msg, data_fields,
// code (and RateLimitedError's retry-after after that).
type apiError struct {
	status int
	msg    string
	data   []field
	code   string // empty for the 500 body, which has no code
	after  []field
	header http.Header
}

func (e *apiError) reply() reply {
	var j jsonWriter
	j.begin()
	j.str("result", "error")
	j.str("msg", e.msg)
	for _, f := range e.data {
		j.raw(f.key, f.value)
	}
	if e.code != "" {
		j.str("code", e.code)
	}
	for _, f := range e.after {
		j.raw(f.key, f.value)
	}
	j.end()
	h := http.Header{"Content-Type": {"application/json"}}
	for k, vs := range e.header {
		h[k] = vs
	}
	return reply{status: e.status, header: h, body: j.line()}
}

// badRequest is a plain JsonableError.
func badRequest(msg string) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: msg, code: "BAD_REQUEST"}
}

// internalError is what Zulip's JsonErrorHandler answers for an unexpected
// exception on an API path.
func internalError() *apiError {
	return &apiError{status: http.StatusInternalServerError, msg: "Internal server error"}
}

func notFound() reply {
	return (&apiError{status: http.StatusNotFound, msg: "Not Found", code: "BAD_REQUEST"}).reply()
}

// options is rest_dispatch's answer to OPTIONS: 204 with the supported
// methods, sorted.
func options(methods []string) reply {
	allow := slices.Clone(methods)
	sort.Strings(allow)
	return reply{
		status:     http.StatusNoContent,
		header:     http.Header{"Allow": {strings.Join(allow, ", ")}, "Content-Type": {"text/html; charset=utf-8"}},
		neverCache: true,
	}
}

// methodNotAllowed is json_method_not_allowed: a Django
// HttpResponseNotAllowed (so text/html and an Allow header) whose content
// is replaced by compact JSON without a trailing newline.
func methodNotAllowed(methods []string) reply {
	var j jsonWriter
	j.begin()
	j.str("result", "error")
	j.str("msg", "Method Not Allowed")
	j.strs("allowed_methods", methods)
	j.end()
	return reply{
		status:     http.StatusMethodNotAllowed,
		header:     http.Header{"Allow": {strings.Join(methods, ", ")}, "Content-Type": {"text/html; charset=utf-8"}},
		body:       j.b,
		neverCache: true,
	}
}

// success is json_success: the envelope, the view's data, then the
// parameters typed_endpoint did not process.
func (c *call) success(fill func(j *jsonWriter), processed ...string) reply {
	return successReply(fill, c.form.ignored(processed...))
}

// successReply is json_success with data written by fill, and the
// ignored_parameters_unsupported a typed_endpoint view adds (nil for a
// view that is not one, which never lists any).
func successReply(fill func(j *jsonWriter), ignored []string) reply {
	var j jsonWriter
	j.begin()
	j.str("result", "success")
	j.str("msg", "")
	if fill != nil {
		fill(&j)
	}
	if len(ignored) > 0 {
		j.strs("ignored_parameters_unsupported", ignored)
	}
	j.end()
	return reply{status: http.StatusOK, header: jsonHeader(), body: j.line(), neverCache: true}
}

func jsonHeader() http.Header {
	return http.Header{"Content-Type": {"application/json"}}
}

// loginRedirect is JsonErrorHandler's answer to a browser without a
// session: the login page, remembering the path.
func loginRedirect(path string) reply {
	loc := "/login/?" + url.Values{"next": {path}}.Encode()
	return reply{
		status: http.StatusFound,
		header: http.Header{"Location": {loc}, "Content-Type": {"text/html; charset=utf-8"}},
	}
}
