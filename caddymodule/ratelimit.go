package caddymodule

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
)

// errRateReserve is the error of a request of the handler's own that the
// user's rate limit could not pay for (design §7.6): the caller goes on
// as when the server's answer told nothing.
var errRateReserve = errors.New("the user's rate limit cannot pay for the request")

// observeRate records how much of the user's rate limit Zulip reported
// left with an answer to one of the session's requests, received at at;
// ok tells Zulip's success, whose lack of the header means no limit.
func (c *call) observeRate(hdr http.Header, at time.Time, ok bool) {
	v := hdr.Get("X-RateLimit-Remaining")
	n, err := strconv.Atoi(v)
	switch {
	case v == "" && ok:
		n = cache.Unlimited // a Zulip success without the header: no limit
	case v == "" || err != nil:
		return
	}
	c.sess.ObserveRate(n, at)
	if row := c.boundRow(); row != nil {
		row.ObserveRate(n, at)
	}
}

// maySpend reports whether the handler may spend one of the user's
// requests now on a request of its own, and records it if so. Until an
// answer told the user's row (a browser session just bound to its user),
// the session's account stands in for it.
func (c *call) maySpend() bool {
	if row := c.boundRow(); row != nil && row.RateKnown(c.h.now()) {
		return row.SpendRequest(c.h.now(), cache.DefaultRatePolicy)
	}
	return c.sess.SpendRequest(c.h.now(), cache.DefaultRatePolicy)
}

// boundRow is the mirror of the session's user's row if the session is
// known to be that user's already, nil otherwise; it creates nothing for
// credentials the server has not accepted.
func (c *call) boundRow() *cache.RowMirror {
	if c.row == nil && c.sess.User() != "" {
		return c.bindUserRow()
	}
	return c.row
}
