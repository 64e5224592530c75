package caddymodule

import (
	"math"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("zulip_presence", parseCaddyfile)
	// After request_body, so that its max_size applies before we read the
	// body, and after encode, so that the full tables we render are
	// compressed like any answer; before handle and route, so that it
	// runs even when the operator wraps reverse_proxy in one of them.
	httpcaddyfile.RegisterDirectiveOrder("zulip_presence", httpcaddyfile.After, "encode")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var zp Handler
	err := zp.UnmarshalCaddyfile(h.Dispenser)
	return &zp, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	zulip_presence [<matcher>] {
//		mode            session|shared
//		max_staleness   <duration>
//		presence_update_min_freq     <duration>
//		presence_legacy_event_offset <duration>
//		coalesce_window <duration>
//		trust_window    <duration>
//		resync_interval <duration>
//		users_refresh   <duration>
//		max_body        <size>
//		cache_name      <name>
//		cache_size      <size>
//		shadow
//		verify_rate     <fraction>
//	}
//
// Every subdirective is optional and may be given once; sizes take units
// such as 64KiB or 256MiB.
// The directive is ordered after request_body and encode by default.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if seen[d.Val()] {
			return d.Errf("subdirective '%s' given twice", d.Val())
		}
		seen[d.Val()] = true
		if err := h.unmarshalSubdirective(d); err != nil {
			return err
		}
	}
	return nil
}

func (h *Handler) unmarshalSubdirective(d *caddyfile.Dispenser) error {
	name := d.Val()
	if name == "shadow" {
		// A flag, or "shadow true|false".
		h.Shadow = true
		if d.NextArg() {
			v, err := strconv.ParseBool(d.Val())
			if err != nil {
				return d.Errf("bad value %q for shadow: %v", d.Val(), err)
			}
			h.Shadow = v
		}
		if d.NextArg() {
			return d.ArgErr()
		}
		return nil
	}
	if !d.NextArg() {
		return d.ArgErr()
	}
	val := d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	var err error
	switch name {
	case "presence_update_min_freq":
		h.PresenceUpdateMinFreq, err = parseDurationPtr(d, name, val)
	case "presence_legacy_event_offset":
		h.PresenceLegacyEventOffset, err = parseDurationPtr(d, name, val)
	case "coalesce_window":
		h.CoalesceWindow, err = parseDuration(d, name, val)
	case "mode":
		h.Mode = val
	case "max_staleness":
		h.MaxStaleness, err = parseDuration(d, name, val)
	case "trust_window":
		h.TrustWindow, err = parseDuration(d, name, val)
	case "resync_interval":
		h.ResyncInterval, err = parseDuration(d, name, val)
	case "users_refresh":
		h.UsersRefresh, err = parseDuration(d, name, val)
	case "max_body":
		h.MaxBody, err = parseSize(d, name, val)
	case "cache_size":
		h.CacheSize, err = parseSize(d, name, val)
	case "cache_name":
		h.CacheName = val
	case "verify_rate":
		var rate float64
		rate, err = strconv.ParseFloat(val, 64)
		if err != nil || math.IsNaN(rate) || math.IsInf(rate, 0) {
			return d.Errf("bad fraction %q for verify_rate: want a number from 0 to 1", val)
		}
		h.VerifyRate = &rate
	default:
		return d.Errf("unrecognized subdirective '%s'", name)
	}
	return err
}

// parseDuration reads a positive duration. In JSON a zero leaves the
// default in place, so a Caddyfile that says 0 (never trust, never
// coalesce) is refused rather than silently read as the default.
func parseDuration(d *caddyfile.Dispenser, name, val string) (caddy.Duration, error) {
	dur, err := parseAnyDuration(d, name, val)
	if err == nil && dur <= 0 {
		return 0, d.Errf("%s must be positive, not %q (leave it out for the default)", name, val)
	}
	return dur, err
}

func parseAnyDuration(d *caddyfile.Dispenser, name, val string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(val)
	if err != nil {
		return 0, d.Errf("bad duration %q for %s: %v", val, name, err)
	}
	return caddy.Duration(dur), nil
}

// parseDurationPtr is parseDuration for a setting whose zero is a value,
// not the default.
func parseDurationPtr(d *caddyfile.Dispenser, name, val string) (*caddy.Duration, error) {
	dur, err := parseAnyDuration(d, name, val)
	if err != nil {
		return nil, err
	}
	return &dur, nil
}

// parseSize reads a positive size; zero is refused as parseDuration
// refuses it.
func parseSize(d *caddyfile.Dispenser, name, val string) (int64, error) {
	if strings.HasPrefix(strings.TrimSpace(val), "-") {
		return 0, d.Errf("%s must be positive, not %q", name, val)
	}
	n, err := humanize.ParseBytes(val)
	if err != nil {
		return 0, d.Errf("bad size %q for %s: %v", val, name, err)
	}
	if n == 0 {
		return 0, d.Errf("%s must be positive, not %q (leave it out for the default)", name, val)
	}
	if n > 1<<62 {
		return 0, d.Errf("size %q for %s is too large", val, name)
	}
	return int64(n), nil
}
