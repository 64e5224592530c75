package caddymodule

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

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
	// A full poll whose converted request failed or got an error: the
	// client gets that answer.
	outcomeUpstreamError = "upstream_error"
	// A full poll answered by a server older than Zulip 9.0, rewritten.
	outcomeOldServer = "old_server"
)

// kindOther labels requests that were not classified (unparsed, oversize).
const kindOther = "other"

// call is one presence request on its way through the handler. Its path
// (serve): the body is read and parsed, the credentials read and the
// session resolved; the mode may serve it (shared mode, from the host's
// view); otherwise its ping is gated, its full poll converted or its
// incremental poll forwarded. What the handler answers itself is a reply,
// delivered in one place (reply.go); what the server answers streams
// through (forward.go).
type call struct {
	h    *Handler
	w    http.ResponseWriter
	r    *http.Request
	next caddyhttp.Handler

	parsed
	requester
	known
	comparing

	outcome string // as recorded, once the request was counted
}

// parsed is the request as the handler understood it.
type parsed struct {
	req    presence.Request
	extras []presence.Extra // parameters the view does not take (extras.go)
	kind   string
	body   *[]byte // the body as read; installed again before anything goes upstream
}

// requester is whose request it is, and the write it reserved.
type requester struct {
	family cache.Family
	host   string      // the host part of keys
	creds  credentials // as Zulip reads them
	key    cache.Key
	sess   *cache.Session
	ticket cache.Ticket // the write this request reserved, until settled
}

// known is what the request learned of its user and host on the way.
type known struct {
	row   *cache.RowMirror // the mirror of the user's presence row, once known
	facts *cache.Host      // what the store knows of the host, once found
	fed   bool             // shared mode: the request's write fed the view
}

// comparing is what shadow mode and verification keep to compare the
// handler's answer with the server's (shadow.go).
type comparing struct {
	original  *original    // shadow mode: the server's answer to the request as it came
	fetched   *fetchedRows // what the handler's own fetch returned
	verifying *verifying   // a request sampled for verification
}

func (c *call) serve() error {
	// Whatever the request reserved is released when it ends, however it
	// ends: reverse_proxy aborts a response cut off mid-body with
	// panic(http.ErrAbortHandler), which must not leave the session's
	// other requests waiting for a write that never settles.
	defer c.release()
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
	c.req, c.extras = parsed.Request, parsed.Extras
	kind := c.req.Kind()
	c.kind = kind.String()
	if c.extras != nil && (kind == presence.KindPing || kind == presence.KindModern) {
		// Only full polls are converted with their extras (extras.go).
		return c.passThrough()
	}
	creds, ok := readCredentials(c.r, c.family)
	if !ok {
		// None, or not read exactly as Zulip reads them: only the server
		// may say what they are worth.
		return c.passThrough()
	}
	c.creds, c.host = creds, hostOf(c.r)
	c.key = c.h.store.SessionKey(c.host, c.family, creds.parts[:creds.n]...)
	c.sess = c.h.store.Acquire(c.key, c.h.now())
	if c.extras != nil && c.extrasRead() {
		return c.passThrough() // the server reads one of them
	}
	if c.h.Shadow {
		return c.serveShadow(kind)
	}
	c.startVerifying()
	defer c.finishVerifying()
	return c.answer(kind)
}

// answer serves the request as its kind and the mode call for: the mode
// first (in shared mode the host's view answers an eligible session); every
// other request has its ping gated, its full poll converted, or its
// incremental poll forwarded.
func (c *call) answer(kind presence.Kind) error {
	if handled, err := c.h.mode.serve(c); handled {
		return err
	}
	switch kind {
	case presence.KindPing:
		return c.ping()
	case presence.KindModern:
		c.reserve()
		return c.forward(outcomeForwarded)
	}
	return c.convert()
}

// release settles a write still reserved (the request ended before its
// answer was read, or panicked) as failed, and ends the request's hold on
// its session.
func (c *call) release() {
	if c.sess == nil {
		return
	}
	c.sess.Settle(&c.ticket, cache.VerdictFailed)
	c.h.store.Release(c.key, c.sess)
}

// reserve records that the request's write goes upstream now.
func (c *call) reserve() {
	c.ticket = c.sess.Reserve(c.h.now(), c.write(), c.window())
}

// write is the presence write the request carries.
func (c *call) write() cache.Write {
	return cache.Write{Active: c.req.Active(), Input: c.req.NewUserInput}
}

func (c *call) window() time.Duration { return time.Duration(c.h.CoalesceWindow) }

// legacyOffset is the server's PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS.
func (c *call) legacyOffset() int64 {
	return int64(time.Duration(*c.h.PresenceLegacyEventOffset) / time.Second)
}

func (c *call) policy() cache.Policy {
	return cache.Policy{Window: c.window(), Trust: time.Duration(c.h.TrustWindow)}
}

// hostInfo is what the store knows of the request's host, nil before any
// session of it was accepted.
func (c *call) hostInfo() *cache.Host {
	if c.facts == nil {
		c.facts = c.h.store.Host(c.host, c.h.now())
	}
	return c.facts
}

// hostFor is hostInfo, created if need be, its time to live renewed: the
// server accepted a session of the host, whose facts are in use.
func (c *call) hostFor() *cache.Host {
	if c.facts == nil {
		c.facts = c.h.store.HostFor(c.host, c.h.now())
		return c.facts
	}
	c.h.store.RenewHost(c.facts, c.h.now())
	return c.facts
}

// settle tells the session what became of its reserved write, and keeps
// or drops the session accordingly. The answer's header, and when the
// request was sent and answered, date the server's clock; it is learned
// before the session is trusted, so that a ping trusting it can use it.
func (c *call) settle(o cache.Verdict, hdr http.Header, sent, received time.Time) {
	// What the answer tells is learned before Settle wakes the
	// session's requests waiting for it: they decide on it at once
	// (the row written, the rate limit left, the session stored).
	switch o {
	case cache.VerdictOK:
		observeDate(c.hostFor(), hdr, sent, received)
		c.h.store.Keep(c.key, c.sess, c.h.now())
		if row := c.bindUserRow(); row != nil {
			row.Wrote()
		}
		// Once Basic credentials are bound to their user, and before
		// the requests below spend of that user's limit.
		c.observeRate(hdr, received, true)
	case cache.VerdictDenied:
	default:
		c.observeRate(hdr, received, false) // a 429 reports 0 left
	}
	c.sess.Settle(&c.ticket, o)
	switch o {
	case cache.VerdictOK:
		c.h.mode.accepted(c)
	case cache.VerdictDenied:
		c.h.store.Forget(c.key, c.sess)
	}
}

// basicUserKey is the key of the user that Basic credentials name: their
// email, ASCII case folded, and their API key (cache.Store.UserKey).
func (c *call) basicUserKey() cache.UserKey {
	return c.h.store.UserKey(c.host, c.creds.parts[:c.creds.n]...)
}

// bindUserRow returns the mirror of the session's user's row, nil while
// the user is not known, and binds Basic credentials to the user they
// name. Call it only once the server accepted the session.
func (c *call) bindUserRow() *cache.RowMirror {
	if c.row != nil {
		return c.row
	}
	u := c.sess.User()
	if u == "" && c.family == cache.FamilyAPI {
		u = c.basicUserKey()
		c.sess.Bind(u)
	}
	if u == "" {
		return nil
	}
	c.row = c.h.store.RowFor(u, c.h.now())
	return c.row
}

// record counts the request and adds its outcome to the access log.
func (c *call) record(outcome string, upstreamBytes int) {
	c.outcome = outcome
	c.h.metrics.observe(c.kind, outcome, upstreamBytes)
	if extra, ok := c.r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
		extra.Set(zap.String("zulip_presence", outcome))
	}
}

func (c *call) debug(msg string, fields ...zap.Field) {
	if ce := c.h.logger.Check(zapcore.DebugLevel, msg); ce != nil {
		ce.Write(append(fields, zap.String("kind", c.kind))...)
	}
}
