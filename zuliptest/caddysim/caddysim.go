// Package caddysim is the Caddy adapter of zuliptest: the HTTP handler
// module http.handlers.zulip_sim and its Caddyfile directive zulip_sim,
// which serve a seeded demo realm with simulated background activity, so
// that a demo of the presence proxy runs without a Zulip installation.
// Importing it registers the module, the directive and its order (before
// reverse_proxy); importing zuliptest alone registers nothing.
package caddysim

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the Caddy HTTP handler http.handlers.zulip_sim: a simulated
// Zulip server with a seeded demo realm whose users come and go in the
// background, plus the /_sim/ control API. It answers every request it
// gets and never calls the next handler, so a demo of the presence proxy
// needs no Zulip installation.
type Handler struct {
	// Users is the number of users of the demo realm. Default: 200.
	Users int `json:"users,omitempty"`

	// Online is the number of users whose simulated clients keep
	// pinging, at most Users. Default: 40, or Users if that is smaller.
	Online int `json:"online,omitempty"`

	// Seed makes the demo realm and its activity repeatable. Default: 1.
	Seed int64 `json:"seed,omitempty"`

	srv  *zuliptest.Server
	stop context.CancelFunc
	done chan struct{}
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zulip_sim",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision fills in the defaults, builds the demo realm and starts its
// background activity, which stops when the config is unloaded.
func (h *Handler) Provision(ctx caddy.Context) error {
	if h.Users == 0 {
		h.Users = zuliptest.DefaultDemoUsers
	}
	if h.Online == 0 {
		h.Online = min(zuliptest.DefaultDemoOnline, h.Users)
	}
	if h.Seed == 0 {
		h.Seed = zuliptest.DefaultDemoSeed
	}
	// Validate runs after Provision; checking first keeps a bad config
	// from building a realm it cannot use.
	if err := h.Validate(); err != nil {
		return err
	}
	h.srv = zuliptest.NewDemo(zuliptest.DemoConfig{Users: h.Users, Online: h.Online, Seed: h.Seed})
	actx, cancel := context.WithCancel(ctx)
	h.stop, h.done = cancel, make(chan struct{})
	go func() {
		defer close(h.done)
		h.srv.RunActivity(actx)
	}()
	return nil
}

// Validate rejects negative values and more online users than users.
func (h *Handler) Validate() error {
	switch {
	case h.Users < 0:
		return fmt.Errorf("zulip_sim: users must not be negative, got %d", h.Users)
	case h.Online < 0:
		return fmt.Errorf("zulip_sim: online must not be negative, got %d", h.Online)
	case h.Seed < 0:
		return fmt.Errorf("zulip_sim: seed must not be negative, got %d", h.Seed)
	}
	users := h.Users
	if users == 0 {
		users = zuliptest.DefaultDemoUsers
	}
	if h.Online > users {
		return fmt.Errorf("zulip_sim: online (%d) must not exceed users (%d)", h.Online, users)
	}
	return nil
}

// Cleanup stops the background activity. It copes with a Provision that
// failed before starting it.
func (h *Handler) Cleanup() error {
	if h.stop == nil {
		return nil
	}
	h.stop()
	<-h.done
	h.stop = nil
	return nil
}

// ServeHTTP answers the request from the simulated server.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if h.srv == nil {
		return caddyhttp.Error(http.StatusInternalServerError, errors.New("zulip_sim: not provisioned"))
	}
	h.srv.ServeHTTP(w, r)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
