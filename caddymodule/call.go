package caddymodule

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// Outcomes of a presence request, as counted in metrics and access logs.
const (
	outcomeLocal       = "local"       // a ping answered without the server
	outcomeForwarded   = "forwarded"   // sent upstream unchanged, answer learned from
	outcomeConverted   = "converted"   // a full poll served from an incremental fetch
	outcomePassthrough = "passthrough" // not understood or not ours: sent upstream untouched
	outcomeFallback    = "fallback"    // a conversion gave up and sent the original request
)

// kindOther labels requests that were not classified (unparsed, oversize).
const kindOther = "other"

// call is one presence request on its way through the handler.
type call struct {
	h      *Handler
	w      http.ResponseWriter
	r      *http.Request
	next   caddyhttp.Handler
	family cache.Family
	req    presence.Request
	kind   string
	key    cache.Key
	sess   *cache.Session
	row    *cache.Row // the mirror of the user's presence row
	body   *[]byte    // the body as read; installed again before anything goes upstream
}

func (c *call) serve() error {
	c.kind = kindOther
	body, complete, err := readBody(c.r, c.h.MaxBody)
	if err != nil {
		c.record(outcomePassthrough, 0)
		return err // request_body's 413, for Caddy to answer as usual
	}
	if !complete {
		return c.passThrough()
	}
	c.body = body
	var raw []byte
	if body != nil {
		raw = *body
	}
	parsed := presence.Parse(c.r.Header.Get("Content-Type"), raw, c.r.URL.RawQuery)
	if parsed.Err != nil || parsed.Unusual {
		// The server produces its own exact answer; we never invent one.
		return c.passThrough()
	}
	c.req = parsed.Request
	kind := c.req.Kind()
	c.kind = kind.String()
	creds, n := credentials(c.r, c.family)
	if n == 0 {
		return c.passThrough()
	}
	c.key = c.h.store.SessionKey(hostOf(c.r), c.family, creds[:n]...)
	c.sess = c.h.store.LoadOrCreate(c.key)
	if !c.bindUser() {
		c.sess = nil
		return c.passThrough() // the server will say what is wrong
	}
	switch kind {
	case presence.KindPing:
		return c.ping()
	case presence.KindModern:
		return c.forward(c.sess.Reserve(c.h.now(), c.write(), c.window()), outcomeForwarded)
	default:
		return c.convert()
	}
}

// bindUser makes sure the session knows its user before any of its writes
// goes upstream, and loads the mirror of that user's row.
func (c *call) bindUser() bool {
	u := c.sess.User()
	var profile *ownProfile
	if u == "" {
		var err error
		if u, profile, err = c.user(); err != nil {
			c.debug("cannot tell whose session this is: " + err.Error())
			return false
		}
		c.sess.Bind(u)
	}
	c.row = c.h.store.Row(u, c.h.now())
	if profile != nil {
		c.row.SetUser(profile.UserID, profile.DateJoined)
	}
	return true
}

// write is the presence write the request carries.
func (c *call) write() cache.Write {
	return cache.Write{Active: c.req.Active(), Input: c.req.NewUserInput}
}

func (c *call) window() time.Duration { return time.Duration(c.h.CoalesceWindow) }

// ping answers a ping locally when the server would only have done a
// no-op write for a session it trusts, and forwards it otherwise.
func (c *call) ping() error {
	// Reading the row is worth a request only for a session whose ping
	// could be answered locally, that is a trusted one.
	if now := c.h.now(); c.row.NeedsLearning(now, c.window()) && c.sess.Trusted(now, c.window()) {
		c.learnRow()
	}
	tk, forward, err := c.sess.Admit(c.r.Context(), c.h.now, c.write(), c.window(), c.row)
	if err != nil {
		return c.passThrough() // client gone; behave as plain reverse_proxy
	}
	if forward {
		return c.forward(tk, outcomeForwarded)
	}
	releaseBody(c.body)
	c.body = nil
	// net/http adds the Content-Length of so short an answer itself.
	c.w.Header()["Content-Type"] = []string{"application/json"}
	c.w.WriteHeader(http.StatusOK)
	_, err = c.w.Write(presence.PingAnswer)
	c.record(outcomeLocal, 0)
	return err
}

// forward sends the request upstream as it came and learns from the
// answer, which streams to the client unchanged.
func (c *call) forward(tk cache.Ticket, outcome string) error {
	c.restoreBody()
	rec := caddyhttp.NewResponseRecorder(c.w, nil, nil)
	err := c.next.ServeHTTP(rec, c.r)
	c.settle(tk, rec.Status(), err)
	c.record(outcome, rec.Size())
	return err
}

// passThrough sends the request upstream untouched. The server may still
// have written the user's presence row, so the user's row mirror, if the
// handler keeps one, learns that a write may have happened.
func (c *call) passThrough() error {
	c.restoreBody()
	at := c.h.now()
	rec := caddyhttp.NewResponseRecorder(c.w, nil, nil)
	err := c.next.ServeHTTP(rec, c.r)
	c.record(outcomePassthrough, rec.Size())
	if mayHaveWritten(rec.Status(), err) {
		if row := c.knownRow(); row != nil {
			row.Unsure(at)
		}
	}
	return err
}

// mayHaveWritten reports whether Zulip may have stored a presence write
// for a request it answered so: it writes after authentication and
// parameter checks, and a 5xx or a broken connection may come after it.
func mayHaveWritten(status int, err error) bool {
	return err != nil || (status >= 200 && status < 300) || status >= 500
}

// knownRow finds the row mirror of the request's user without asking the
// server: from the session if it is bound, else from Basic credentials.
// A browser session the handler never saw names no user it can know; its
// writes reach only the server.
func (c *call) knownRow() *cache.Row {
	if c.row != nil {
		return c.row
	}
	creds, n := credentials(c.r, c.family)
	if n == 0 {
		return nil
	}
	if sess, ok := c.h.store.Session(c.h.store.SessionKey(hostOf(c.r), c.family, creds[:n]...)); ok {
		if u := sess.User(); u != "" {
			return c.h.store.ExistingRow(u)
		}
	}
	if c.family != cache.FamilyAPI {
		return nil
	}
	email, err := basicEmail(c.r.Header.Get("Authorization"))
	if err != nil {
		return nil
	}
	return c.h.store.ExistingRow(c.h.store.UserKey(hostOf(c.r), email))
}

// restoreBody installs the body as read, so the request goes upstream as
// it came; its buffer now belongs to the transport.
func (c *call) restoreBody() {
	if c.body != nil {
		setBody(c.r, *c.body)
		c.body = nil
	}
}

// settle tells the session what became of a forwarded write.
func (c *call) settle(tk cache.Ticket, status int, err error) {
	if c.sess == nil {
		return
	}
	o := outcomeOf(status, err)
	c.sess.Settle(tk, o, c.h.now(), c.window(), c.row)
	switch o {
	case cache.OutcomeOK:
		c.h.store.Keep(c.key, c.sess)
	case cache.OutcomeDenied:
		c.h.store.Forget(c.key)
	}
}

func outcomeOf(status int, err error) cache.Outcome {
	switch {
	case err != nil:
		return cache.OutcomeFailed
	case status >= 200 && status < 300:
		return cache.OutcomeOK
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return cache.OutcomeDenied
	}
	return cache.OutcomeFailed
}

// record counts the request and adds its outcome to the access log.
func (c *call) record(outcome string, upstreamBytes int) {
	c.h.metrics.observe(c.kind, outcome, upstreamBytes)
	if extra, ok := c.r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Set(zap.String("zulip_presence", outcome))
	}
}
