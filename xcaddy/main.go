// Command xcaddy is Caddy with the standard modules, the zulip_presence
// handler and the zulip_sim simulated Zulip realm: the binary this
// repository runs in development and demos.
//
//	go run ./xcaddy run --config Caddyfile.example
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/zulip-presence/caddy-zulip-presence/caddymodule"
	_ "github.com/zulip-presence/caddy-zulip-presence/zuliptest/caddysim"
)

func main() {
	caddycmd.Main()
}
