package twinrig

import (
	"context"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Handler is what the rig needs of the zulip_presence handler. It is an
// interface, not *caddymodule.Handler, because caddymodule's own tests
// use the rig: this package cannot import caddymodule without a cycle.
type Handler interface {
	caddy.Provisioner
	caddy.Validator
	caddy.CleanerUpper
	caddyhttp.MiddlewareHandler
	// SetClock replaces the handler's time.Now, so that it dates what it
	// sees as the simulated servers do.
	SetClock(now func() time.Time)
}

// Provision provisions h as Caddy would, in a context of its own, and
// validates it. It returns that context (its metrics registry holds the
// handler's collectors) and release, which cleans h up and cancels the
// context. On error h is already released: like Caddy, it cleans up after
// a failed Provision too, which the handler allows.
func Provision(h Handler) (ctx caddy.Context, release func() error, err error) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	release = func() error {
		defer cancel()
		return h.Cleanup()
	}
	if err = h.Provision(ctx); err == nil {
		err = h.Validate()
	}
	if err != nil {
		_ = release()
		return ctx, nil, err
	}
	return ctx, release, nil
}

// Provision provisions h as the package's Provision does, on the rig's
// clock: its local answers are then dated as the servers' are.
func (r *Rig) Provision(h Handler) (ctx caddy.Context, release func() error, err error) {
	ctx, release, err = Provision(h)
	if err == nil {
		h.SetClock(r.Clock.Now)
	}
	return ctx, release, err
}

// Next makes a simulated server the handler's next handler, as a
// reverse_proxy to it would be.
func Next(upstream http.Handler) caddyhttp.Handler {
	return caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		upstream.ServeHTTP(w, r)
		return nil
	})
}
