package caddysim

import (
	"strconv"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("zulip_sim", parseCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("zulip_sim", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	sim := new(Handler)
	if err := sim.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return sim, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	zulip_sim [<matcher>] {
//	    users  <count>
//	    online <count>
//	    seed   <number>
//	}
//
// The block is optional; every option defaults as documented on Handler.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if opt != "users" && opt != "online" && opt != "seed" {
			return d.Errf("unrecognized zulip_sim subdirective '%s'", opt)
		}
		var val string
		if !d.AllArgs(&val) {
			return d.ArgErr()
		}
		v, err := strconv.ParseInt(val, 10, 64)
		if err != nil {
			return d.Errf("zulip_sim %s: %v", opt, err)
		}
		switch opt {
		case "users":
			h.Users = int(v)
		case "online":
			h.Online = int(v)
		case "seed":
			h.Seed = v
		}
	}
	return nil
}
