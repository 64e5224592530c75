package caddymodule

import (
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// requestMode is everything in which session and shared mode differ on
// the request path (docs/design.md §10): whether a request is served from
// the host's view first, and what the server's answers teach the view.
// Every request the mode does not take goes session mode's way: its ping
// gated, its full poll converted, its incremental poll forwarded.
type requestMode interface {
	// serve answers the request from the mode's own state, and reports
	// false, having sent nothing, when it leaves the request to session
	// mode's path.
	serve(c *call) (handled bool, err error)
	// answersTabs reports whether the mode may answer a web app tab's
	// incremental poll itself: shadow mode then has an answer to compare.
	answersTabs() bool
	// accepted learns from the server's success to the request's write.
	accepted(c *call)
	// forwardedPoll learns from the server's success to a web app poll
	// forwarded as it came, received at now.
	forwardedPoll(c *call, ans presence.Decoded, now time.Time)
}

// sessionMode keeps one snapshot per session, and nothing per host.
type sessionMode struct{}

func (sessionMode) serve(*call) (bool, error)                        { return false, nil }
func (sessionMode) answersTabs() bool                                { return false }
func (sessionMode) accepted(*call)                                   {}
func (sessionMode) forwardedPoll(*call, presence.Decoded, time.Time) {}

// sharedMode keeps one view of each host's presence rows (shared.go).
type sharedMode struct{}

func (sharedMode) serve(c *call) (bool, error) { return c.shared() }
func (sharedMode) answersTabs() bool           { return true }

// accepted: a write that fed the view is in it; any other (a session's
// first request, a guest's, a forwarded poll) makes the view wait for its
// next merge (sharedWriteElsewhere).
func (sharedMode) accepted(c *call) {
	if !c.fed {
		c.sharedWriteElsewhere()
	}
}

func (sharedMode) forwardedPoll(c *call, ans presence.Decoded, now time.Time) {
	if c.req.Kind() == presence.KindModern {
		c.mergeForwarded(ans, now)
	}
}

// requestModeOf is the request path of a configured mode.
func requestModeOf(mode string) requestMode {
	if mode == modeShared {
		return sharedMode{}
	}
	return sessionMode{}
}
