// Package caddyzulippresence lets xcaddy build Caddy with this repository by
// its module path, as a local checkout or a published version:
//
//	xcaddy build --with github.com/zulip-presence/caddy-zulip-presence=.
//
// It registers http.handlers.zulip_presence; the simulated Zulip realm
// (zulip_sim) is left out of production builds on purpose.
package caddyzulippresence

import (
	_ "github.com/zulip-presence/caddy-zulip-presence/caddymodule"
)
