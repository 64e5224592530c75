package caddymodule

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	tests := []struct {
		name    string
		input   string
		want    Handler
		wantErr string
	}{
		{name: "empty", input: `zulip_presence`, want: Handler{}},
		{name: "all options", input: `zulip_presence {
			mode            shared
			max_staleness   5s
			trust_window    5m
			coalesce_window 30s
			resync_interval 5m
			users_refresh   1h
			max_body        16KiB
			cache_name      shared
			cache_size      64MiB
		}`, want: Handler{
			Mode:           modeShared,
			MaxStaleness:   caddy.Duration(5 * time.Second),
			TrustWindow:    caddy.Duration(5 * time.Minute),
			CoalesceWindow: caddy.Duration(30 * time.Second),
			ResyncInterval: caddy.Duration(5 * time.Minute),
			UsersRefresh:   caddy.Duration(time.Hour),
			MaxBody:        16 << 10,
			CacheName:      "shared",
			CacheSize:      64 << 20,
		}},
		{name: "Zulip's settings", input: `zulip_presence {
			presence_update_min_freq     0
			presence_legacy_event_offset 30s
		}`, want: Handler{PresenceUpdateMinFreq: durationPtr(0), PresenceLegacyEventOffset: durationPtr(30 * time.Second)}},
		{name: "shadow and verification", input: `zulip_presence {
			shadow
			verify_rate 0.05
		}`, want: Handler{Shadow: true, VerifyRate: ratePtr(0.05)}},
		{name: "shadow off", input: "zulip_presence {\n shadow false\n}", want: Handler{}},
		{name: "bad shadow", input: "zulip_presence {\n shadow maybe\n}", wantErr: `bad value "maybe" for shadow`},
		{name: "bad verify_rate", input: "zulip_presence {\n verify_rate often\n}", wantErr: `bad fraction "often" for verify_rate`},
		{name: "unknown subdirective", input: "zulip_presence {\n coalesce 5s\n}", wantErr: "unrecognized subdirective 'coalesce'"},
		{name: "missing value", input: "zulip_presence {\n max_body\n}", wantErr: "wrong argument count"},
		{name: "extra value", input: "zulip_presence {\n max_body 1KiB 2KiB\n}", wantErr: "wrong argument count"},
		{name: "bad duration", input: "zulip_presence {\n resync_interval soon\n}", wantErr: `bad duration "soon" for resync_interval`},
		{name: "bad size", input: "zulip_presence {\n cache_size lots\n}", wantErr: `bad size "lots" for cache_size`},
		{name: "zero trust_window", input: "zulip_presence {\n trust_window 0\n}", wantErr: `trust_window must be positive, not "0" (leave it out for the default)`},
		{name: "zero coalesce_window", input: "zulip_presence {\n coalesce_window 0s\n}", wantErr: `coalesce_window must be positive`},
		{name: "zero max_body", input: "zulip_presence {\n max_body 0\n}", wantErr: `max_body must be positive, not "0"`},
		{name: "negative cache_size", input: "zulip_presence {\n cache_size -1\n}", wantErr: `cache_size must be positive, not "-1"`},
		{name: "NaN verify_rate", input: "zulip_presence {\n verify_rate NaN\n}", wantErr: `bad fraction "NaN" for verify_rate`},
		{name: "infinite verify_rate", input: "zulip_presence {\n verify_rate Inf\n}", wantErr: `bad fraction "Inf" for verify_rate`},
		{name: "repeated subdirective", input: "zulip_presence {\n cache_size 1MiB\n cache_size 2MiB\n}", wantErr: "subdirective 'cache_size' given twice"},
		{name: "inline argument", input: `zulip_presence 5s`, wantErr: "wrong argument count"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h.Mode != tc.want.Mode || h.MaxStaleness != tc.want.MaxStaleness || h.TrustWindow != tc.want.TrustWindow {
				t.Fatalf("got %+v, want %+v", h, tc.want)
			}
			if h.Shadow != tc.want.Shadow || (h.VerifyRate == nil) != (tc.want.VerifyRate == nil) || (h.VerifyRate != nil && *h.VerifyRate != *tc.want.VerifyRate) {
				t.Fatalf("got %+v, want %+v", h, tc.want)
			}
			if !sameDurationPtr(h.PresenceUpdateMinFreq, tc.want.PresenceUpdateMinFreq) ||
				!sameDurationPtr(h.PresenceLegacyEventOffset, tc.want.PresenceLegacyEventOffset) {
				t.Fatalf("got %+v, want %+v", h, tc.want)
			}
			if h.CoalesceWindow != tc.want.CoalesceWindow || h.ResyncInterval != tc.want.ResyncInterval ||
				h.UsersRefresh != tc.want.UsersRefresh || h.MaxBody != tc.want.MaxBody ||
				h.CacheName != tc.want.CacheName || h.CacheSize != tc.want.CacheSize {
				t.Fatalf("got %+v, want %+v", h, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	valid := func() Handler {
		h := Handler{}
		h.fillDefaults()
		return h
	}
	tests := []struct {
		name    string
		change  func(*Handler)
		wantErr string
	}{
		{name: "defaults", change: func(*Handler) {}},
		{name: "window above Zulip's threshold", change: func(h *Handler) { h.CoalesceWindow = caddy.Duration(56 * time.Second) }, wantErr: "exceeds presence_update_min_freq 55s"},
		{name: "window above a lowered threshold", change: func(h *Handler) {
			h.PresenceUpdateMinFreq = durationPtr(10 * time.Second)
		}, wantErr: "coalesce_window 55s exceeds presence_update_min_freq 10s"},
		{name: "verify_rate above 1", change: func(h *Handler) { h.VerifyRate = ratePtr(1.5) }, wantErr: "verify_rate must be between 0 and 1"},
		{name: "verify_rate off", change: func(h *Handler) { h.VerifyRate = ratePtr(0) }},
		{name: "negative min freq", change: func(h *Handler) { h.PresenceUpdateMinFreq = durationPtr(-1) }, wantErr: "presence_update_min_freq must not be negative"},
		{name: "offset in fractions of a second", change: func(h *Handler) {
			h.PresenceLegacyEventOffset = durationPtr(1500 * time.Millisecond)
		}, wantErr: "presence_legacy_event_offset must be whole seconds"},
		{name: "negative offset", change: func(h *Handler) { h.PresenceLegacyEventOffset = durationPtr(-time.Second) }, wantErr: "presence_legacy_event_offset"},
		{name: "negative window", change: func(h *Handler) { h.CoalesceWindow = -1 }, wantErr: "coalesce_window must be positive"},
		{name: "unknown mode", change: func(h *Handler) { h.Mode = "realm" }, wantErr: `mode must be session or shared, not "realm"`},
		{name: "shared mode", change: func(h *Handler) { h.Mode = modeShared }},
		{name: "cache of 16GiB", change: func(h *Handler) { h.CacheSize = 16 << 30 }},
		{name: "shadow against a server storing every write", change: func(h *Handler) {
			h.PresenceUpdateMinFreq, h.CoalesceWindow, h.Shadow = durationPtr(0), 0, true
		}, wantErr: "shadow and verify_rate need presence_update_min_freq above 0"},
		{name: "verification against a server storing every write", change: func(h *Handler) {
			h.PresenceUpdateMinFreq, h.CoalesceWindow, h.VerifyRate = durationPtr(0), 0, ratePtr(0.5)
		}, wantErr: "shadow and verify_rate need presence_update_min_freq above 0"},
		{name: "no verification against a server storing every write", change: func(h *Handler) {
			h.PresenceUpdateMinFreq, h.CoalesceWindow, h.VerifyRate = durationPtr(0), 0, ratePtr(0)
		}},
		{name: "cache of 256GiB", change: func(h *Handler) { h.CacheSize = 256 << 30 }, wantErr: "cache_size must be at most 16GiB"},
		{name: "negative staleness", change: func(h *Handler) { h.MaxStaleness = -1 }, wantErr: "max_staleness must be positive"},
		{name: "trust window of a day", change: func(h *Handler) { h.TrustWindow = caddy.Duration(24 * time.Hour) }, wantErr: "trust_window 24h0m0s exceeds 1h0m0s"},
		{name: "negative trust window", change: func(h *Handler) { h.TrustWindow = -1 }, wantErr: "trust_window must be positive"},
		{name: "trust window of five minutes", change: func(h *Handler) { h.TrustWindow = caddy.Duration(5 * time.Minute) }},
		{name: "resync shorter than window", change: func(h *Handler) { h.ResyncInterval = caddy.Duration(time.Second) }, wantErr: "resync_interval"},
		{name: "negative users refresh", change: func(h *Handler) { h.UsersRefresh = -1 }, wantErr: "users_refresh"},
		{name: "negative max body", change: func(h *Handler) { h.MaxBody = -5 }, wantErr: "max_body"},
		{name: "tiny cache", change: func(h *Handler) { h.CacheSize = 1000 }, wantErr: "cache_size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := valid()
			tc.change(&h)
			err := h.Validate()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func ratePtr(r float64) *float64 { return &r }

func durationPtr(d time.Duration) *caddy.Duration {
	c := caddy.Duration(d)
	return &c
}

func sameDurationPtr(a, b *caddy.Duration) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

// TestSettingsFollowZulips: coalesce_window and trust_window follow a
// lowered PRESENCE_UPDATE_MIN_FREQ_SECONDS; 0 leaves no window for local
// answers, and shared mode still trusts sessions for Zulip's default.
func TestSettingsFollowZulips(t *testing.T) {
	for _, tc := range []struct {
		minFreq, window, trust time.Duration
	}{{10 * time.Second, 10 * time.Second, 10 * time.Second}, {0, 0, 55 * time.Second}} {
		h := Handler{PresenceUpdateMinFreq: durationPtr(tc.minFreq)}
		h.fillDefaults()
		if err := h.Validate(); err != nil {
			t.Fatalf("min freq %v: %v", tc.minFreq, err)
		}
		if time.Duration(h.CoalesceWindow) != tc.window || time.Duration(h.TrustWindow) != tc.trust {
			t.Fatalf("min freq %v: coalesce_window %v, trust_window %v; want %v, %v", tc.minFreq, time.Duration(h.CoalesceWindow), time.Duration(h.TrustWindow), tc.window, tc.trust)
		}
	}
}

func TestProvisionFillsDefaults(t *testing.T) {
	h := provision(t, Handler{CacheName: t.Name()})
	if time.Duration(h.CoalesceWindow) != 55*time.Second || time.Duration(h.ResyncInterval) != 10*time.Minute ||
		time.Duration(h.UsersRefresh) != 10*time.Minute || h.MaxBody != 64<<10 || h.CacheSize != 256<<20 {
		t.Fatalf("defaults not filled: %+v", h)
	}
}
