package caddymodule

import (
	"bytes"
	"net/http"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// ping answers a ping locally when the server would only have done a
// no-op write for a session it trusts, and forwards it otherwise.
func (c *call) ping() error {
	if done, err := c.gatePing(false); done {
		return err
	}
	return c.forward(outcomeForwarded)
}

// gatePing answers the request's ping locally when the session's gate
// allows it, and otherwise reserves its write for the caller to send.
// done is true when the request ended here, err being its result.
// prepared is as for admitPing.
func (c *call) gatePing(prepared bool) (done bool, err error) {
	a, now, ended, err := c.admitPing(prepared)
	switch {
	case ended:
		return true, err
	case a.Decision == cache.Local:
		if tmpl := c.localHeader(); tmpl != nil {
			return true, c.deliver(c.localPing(tmpl, now))
		}
		// Only the server can say what headers this request's answer
		// carries (Content-Language, for one): forward rather than guess.
		c.reserve()
	default:
		c.ticket = a.Ticket
	}
	return false, nil
}

// admitPing asks the session's gate about the request's ping until it
// decides to answer it locally or forward it (with the ticket of its
// write), waiting while the session's writes are in flight and, when the
// gate asks, learning the user's row (prepareRow). prepared tells that the
// row is known already: shared mode takes it from the view. ended is true
// when the request ended on the way, err being its result: the client
// left, or the server refused the credentials.
func (c *call) admitPing(prepared bool) (a cache.Admission, now time.Time, ended bool, err error) {
	for {
		now = c.h.now()
		serverNow, known := c.serverLatest(now)
		a = c.sess.Admit(cache.Ping{Now: now, ServerNow: serverNow, ServerKnown: known, Write: c.write(), Row: c.row, Prepared: prepared}, c.policy())
		switch a.Decision {
		case cache.Local, cache.Forward:
			return a, now, false, nil
		case cache.Prepare:
			// Knowing the user's row is worth requests only for a
			// session whose ping could be answered locally, that is a
			// trusted one.
			if !c.prepareRow(now) {
				return a, now, true, c.passThrough() // the server refused the credentials
			}
			prepared = true
			continue
		}
		select {
		case <-a.Wait:
		case <-c.r.Context().Done():
			return a, now, true, c.passThrough() // client gone; behave as plain reverse_proxy
		}
	}
}

// serverLatest is the latest the host's clock can read while the proxy's
// reads now; known is false before the host answered anything.
func (c *call) serverLatest(now time.Time) (time.Time, bool) {
	if h := c.hostInfo(); h != nil {
		return h.ServerLatest(now)
	}
	return time.Time{}, false
}

// prepareRow binds the session to its user and, when that may let the ping
// be answered locally, reads the user's row from the server. It returns
// false when the server refused the session's credentials on the way.
func (c *call) prepareRow(now time.Time) bool {
	if !c.bindUser() {
		return false
	}
	row := c.bindUserRow()
	if row == nil {
		return true // the user is unknown: the ping is forwarded
	}
	if serverNow, known := c.serverLatest(now); known && row.WriteIsNoOp(serverNow, c.write(), c.window()) {
		return true
	}
	return c.readRow(row)
}

// pingHeaderSkip are the headers of a ping's answer that belong to that one
// answer (framing and coding, cookies, the rate-limit count), not to every
// answer: a local answer's body is never compressed.
var pingHeaderSkip = map[string]bool{
	"Content-Length": true, "Transfer-Encoding": true, "Connection": true, "Keep-Alive": true,
	"Content-Encoding": true, "Set-Cookie": true, "Retry-After": true, "X-Ratelimit-Limit": true,
	"X-Ratelimit-Remaining": true, "X-Ratelimit-Reset": true,
}

// pingHeaderOf keeps what a local answer should repeat of the server's
// answer to a ping. Date and Expires are kept without their values, which
// a local answer takes from the server's clock, so that the answers of
// sessions alike give equal templates.
func pingHeaderOf(upstream http.Header) http.Header {
	out := make(http.Header, len(upstream))
	for k, v := range upstream {
		if k == "Date" || k == "Expires" {
			out[k] = nil
			continue
		}
		if !pingHeaderSkip[k] {
			// Clipped, so that a handler appending to a local answer's
			// header copies instead of writing into the template.
			out[k] = v[:len(v):len(v)]
		}
	}
	return out
}

// learnPing learns from the server's success to the request's ping (body
// is its decoded start, whole when complete): whether it was the bare
// ping answer, the only body a local answer has, and then its headers,
// for local answers to repeat.
func (c *call) learnPing(hdr http.Header, body []byte, whole bool) {
	c.hostFor().ObservePingAnswer(c.req.Sent, whole && bytes.Equal(body, presence.PingAnswer))
	c.learnPingHeader(hdr)
}

// learnPingHeader keeps the headers of the server's success to one of the
// session's requests for its pings answered locally: they depend on the
// request (Vary: Accept-Language, Cookie; Content-Language), so each
// session repeats its own, interned per host so that sessions alike share
// one copy, and only for requests asking the same language.
func (c *call) learnPingHeader(upstream http.Header) {
	lang, ok := languageOf(c.r)
	if !ok {
		c.sess.SetPingHeader(nil)
		return
	}
	c.sess.SetPingHeader(c.h.store.InternPingHeader(c.host, c.hostFor(), pingHeaderOf(upstream), lang, c.h.now()))
}

// localHeader returns the session's header template when a local answer
// fits the request: the server gave the template to a request asking for
// the same language, and answered the host's latest ping sending the same
// parameters with the bare ping answer. Otherwise nil, and the ping goes
// to the server, whose answer the session then repeats.
func (c *call) localHeader() *cache.PingHeader {
	p := c.sess.PingHeader()
	if p == nil || !c.plainPing() {
		return nil
	}
	if lang, ok := languageOf(c.r); !ok || p.Language != lang {
		return nil
	}
	return p
}

// plainPing reports whether the server answers a ping sending the
// request's parameters with nothing but the bare ping answer.
func (c *call) plainPing() bool {
	host := c.hostInfo()
	return host != nil && host.PlainPing(c.req.Sent, c.h.now())
}

// languageCookies names Django's LANGUAGE_COOKIE_NAME, in the shape
// onlyCookie takes.
var languageCookies = [2]string{"django_language", "django_language"}

// maxLanguageBytes bounds the language a header template is kept with: a
// browser's Accept-Language is a few dozen bytes, and a longer one only
// sends its pings to the server.
const maxLanguageBytes = 256

// languageOf is what the request asks Zulip's LocaleMiddleware for, as
// sent: two spellings of one language only cost a forwarded ping. ok is
// false where the handler would not read it as Django does (several
// Cookie or Accept-Language lines, which the WSGI server joins; a Cookie
// line Django strips otherwise, plainCookieHeader) or it is longer than
// maxLanguageBytes: such a request's pings go to the server.
func languageOf(r *http.Request) (lang cache.Language, ok bool) {
	cookies, accept := r.Header["Cookie"], r.Header["Accept-Language"]
	if len(cookies) > 1 || len(accept) > 1 {
		return lang, false
	}
	if len(cookies) == 1 {
		if !plainCookieHeader(cookies[0]) {
			return lang, false
		}
		// The value Django's parse_cookie keeps: the last one given.
		lang.Cookie, _ = onlyCookie(cookies[0], languageCookies)
	}
	if len(accept) == 1 {
		lang.Accept = accept[0]
	}
	return lang, len(lang.Cookie)+len(lang.Accept) <= maxLanguageBytes
}

// claim is what a local answer to the ping, written with tmpl, rests on.
func (c *call) claim(tmpl *cache.PingHeader) pingClaim {
	return pingClaim{bounds: c.row.Bounds(), write: c.write(), window: c.window(), legacyOffset: c.legacyOffset(), language: tmpl.Header["Content-Language"]}
}
