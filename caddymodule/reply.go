package caddymodule

import (
	"bytes"
	"net/http"
	"strconv"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// reply is an answer the handler made itself, as a value: a ping answered
// locally, the ping body after a write that fed the view, a full table
// rendered from the session's snapshot or the host's view, an incremental
// answer from the view, or an old server's table rewritten. Every one of
// them reaches the client through deliver, the one place that writes it,
// counts it, and compares it when shadowing or verifying. Answers the
// server gave stream to the client as they come (forward) and are never
// replies.
type reply struct {
	outcome string
	// upstream counts the bytes the request pulled from upstream.
	upstream int
	status   int
	// header is the server's answer to the request's own fetch, whose
	// rate-limit and cache headers the reply repeats.
	header http.Header
	body   []byte
	// buf, when set, is the pooled buffer body lies in.
	buf *[]byte
	// local marks a ping answered without the server, written with the
	// header template tmpl (setLocalHeader), the one the gate found to
	// fit the request, dated at, when the gate admitted it.
	local bool
	tmpl  *cache.PingHeader
	at    time.Time
}

// rendered is a reply rendered into a pooled buffer, with the header and
// status of the server's answer to the fetch it rests on.
func rendered(outcome string, fetch *recorder, buf *[]byte) reply {
	return reply{outcome: outcome, upstream: fetch.received, status: fetch.status, header: fetch.header, body: *buf, buf: buf}
}

// deliver gives the client the handler's own answer. In shadow mode the
// client has the server's answer to its request already (or, for a ping,
// gets it now), and the reply is only compared with it; a request sampled
// for verification keeps a copy, compared once the client has it
// (finishVerifying).
func (c *call) deliver(rep reply) error {
	defer rep.free()
	switch {
	case c.h.Shadow && rep.local:
		// The ping goes upstream as it came, and a read of the row tells
		// whether the server stored its write.
		return c.checkLocalPing(c.w, c.claim(rep.tmpl), outcomeForwarded)
	case c.original != nil:
		c.record(rep.outcome, rep.upstream)
		c.compareAnswer(rep.body, c.original, rep.outcome, false)
		return nil
	}
	if v := c.verifying; v != nil && verifiable(rep.outcome) {
		v.keep(c, rep)
	}
	c.record(rep.outcome, rep.upstream)
	if rep.local {
		return c.writeLocal(rep.body, rep.tmpl, rep.at)
	}
	return writeAnswer(c.w, rep.header, rep.status, rep.body)
}

// free returns the reply's buffer to its pool.
func (rep reply) free() {
	if rep.buf != nil {
		putBuf(rep.buf)
	}
}

// localPing is the answer to a ping the gate let the handler answer
// without the server.
func (c *call) localPing(tmpl *cache.PingHeader, now time.Time) reply {
	return reply{outcome: outcomeLocal, status: http.StatusOK, body: presence.PingAnswer, local: true, tmpl: tmpl, at: now}
}

// keep keeps what a verification compares: the answer the client gets
// and, for a local ping, what the answer rests on.
func (v *verifying) keep(c *call, rep reply) {
	v.answer = bytes.Clone(rep.body)
	if rep.local {
		claim := c.claim(rep.tmpl)
		v.claim = &claim
	}
}

// writeLocal writes an answer made without the server, with the header
// template tmpl (setLocalHeader).
func (c *call) writeLocal(body []byte, tmpl *cache.PingHeader, now time.Time) error {
	releaseBody(c.body)
	c.body = nil
	c.setLocalHeader(c.w.Header(), tmpl, now)
	if c.row != nil {
		c.row.SavedRequest(now) // not counted against the user's rate limit
	}
	// net/http adds the Content-Length of so short an answer itself.
	c.w.WriteHeader(http.StatusOK)
	_, err := c.w.Write(body)
	return err
}

// writeAnswer sends a rendered answer with the upstream answer's headers
// (rate-limit and cache headers), its framing replaced by ours.
func writeAnswer(w http.ResponseWriter, upstream http.Header, status int, body []byte) error {
	hdr := w.Header()
	copyHeader(hdr, upstream)
	hdr.Del("Content-Encoding")
	hdr.Del("Transfer-Encoding")
	hdr.Set("Content-Type", "application/json")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, err := w.Write(body)
	return err
}
