// Package caddymodule registers the Caddy HTTP handler
// http.handlers.zulip_presence, which sits in front of a Zulip server and
// makes its presence traffic cheap: it answers redundant pings itself, turns
// full presence polls into incremental fetches, and passes everything else
// through untouched, so that every client gets what Zulip would have
// answered.
package caddymodule

import (
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults, from Zulip's own constants where they mirror one.
const (
	// defaultMinFreq is Zulip's default PRESENCE_UPDATE_MIN_FREQ_SECONDS:
	// a write within 55 s of the stored one is a database no-op.
	defaultMinFreq = 55 * time.Second
	// defaultLegacyOffset is Zulip's default
	// PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS.
	defaultLegacyOffset   = presence.DefaultLegacyOffset * time.Second
	defaultCoalesceWindow = defaultMinFreq
	defaultResync         = 10 * time.Minute
	defaultUsersRefresh   = 10 * time.Minute
	defaultMaxBody        = 64 << 10
	defaultCacheName      = "default"
	defaultMaxStaleness   = 10 * time.Second
	modeSession           = "session"
	modeShared            = "shared"
	defaultCacheSize      = 256 << 20
	minCacheSize          = 1 << 20
	maxCacheSize          = 16 << 30
	maxTrustWindow        = time.Hour
)

// Handler is a Caddy HTTP handler for Zulip's POST /users/me/presence
// (under /api/v1/ and /json/). It answers a ping itself when the server
// would only have done a no-op write, forwards every write the server must
// see, and converts full presence polls (zulip-flutter, zulip-mobile,
// zulip-terminal, scripts) into incremental last_update_id fetches whose
// answers it merges into a per-session snapshot. Upstream calls go through
// the next handler, normally the operator's reverse_proxy.
type Handler struct {
	// Mode is "session" (the default), where each session converts its
	// own polls, or "shared", where the handler keeps one view of each
	// realm's presence rows, fed by the writes eligible sessions send
	// anyway, and answers their full polls from it.
	Mode string `json:"mode,omitempty"`

	// MaxStaleness is, in shared mode, the oldest a view may be to answer
	// a poll: a view that merged no fetch within it has the poll's write
	// sent as a fetch first. Default: 10s.
	MaxStaleness caddy.Duration `json:"max_staleness,omitempty"`

	// PresenceUpdateMinFreq is the Zulip server's
	// PRESENCE_UPDATE_MIN_FREQ_SECONDS, as a duration: Zulip stores a
	// presence write only when the stored time is older than this. Set it
	// when /etc/zulip/settings.py changes Zulip's default; 0, which makes
	// Zulip store every write, turns local answers off. Default: 55s.
	PresenceUpdateMinFreq *caddy.Duration `json:"presence_update_min_freq,omitempty"`

	// PresenceLegacyEventOffset is the Zulip server's
	// PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS, as a duration:
	// a legacy (email-keyed) answer calls a user "active" when the last
	// activity is within this of the last connection. Set it when
	// /etc/zulip/settings.py changes Zulip's default, or converted legacy
	// answers show the wrong status. Whole seconds. Default: 70s.
	PresenceLegacyEventOffset *caddy.Duration `json:"presence_legacy_event_offset,omitempty"`

	// CoalesceWindow bounds local answers: a ping is answered locally only
	// when its session had a 2xx within the window and the user's presence
	// row was surely stored within it. It must not exceed
	// presence_update_min_freq, or writes the server would make could be
	// lost. Default: presence_update_min_freq.
	CoalesceWindow caddy.Duration `json:"coalesce_window,omitempty"`

	// TrustWindow is how long a session's last success from the server
	// lets its pings be answered without the server. It is a security
	// setting: it bounds how long a revoked API key, a deactivated user or
	// a logged-out browser can still be answered locally. At most 1h.
	// Default: coalesce_window.
	TrustWindow caddy.Duration `json:"trust_window,omitempty"`

	// ResyncInterval is how often a session's snapshot is rebuilt from a
	// full fetch, because incremental answers never report deactivations,
	// users leaving the history window, or visibility changes. Default: 10m.
	ResyncInterval caddy.Duration `json:"resync_interval,omitempty"`

	// UsersRefresh is how often a host's user list, which names the rows of
	// legacy (email-keyed) answers, is fetched again. Default: 10m.
	UsersRefresh caddy.Duration `json:"users_refresh,omitempty"`

	// MaxBody is the largest request body, in bytes, the handler reads;
	// larger requests pass through with their original bytes. Default: 64KiB.
	MaxBody int64 `json:"max_body,omitempty"`

	// Shadow makes every client get the server's answer to its own
	// request, sent upstream as it came, while the handler keeps its
	// state, decides as it would, and compares what it would have
	// answered with the server's answer (verify_total, a warn log line
	// per mismatch, GET /zulip_presence/mismatches on the admin
	// endpoint). It costs what plain reverse_proxy sends plus the
	// handler's own fetches and, for each ping it would have answered
	// locally, one read of the user's row. Default: off.
	Shadow bool `json:"shadow,omitempty"`

	// VerifyRate is the share, from 0 to 1, of the requests the handler
	// answers itself (local pings, converted polls, answers from the
	// view) whose original is sent upstream after the client has its
	// answer, without the client waiting, to compare the server's
	// answer with the client's. Each costs one upstream request (a ping
	// two: the original and a read of the user's row). Default: 0.01.
	VerifyRate *float64 `json:"verify_rate,omitempty"`

	// CacheName names the state store. Handlers with the same name, in one
	// configuration or across reloads, share one store. Within one
	// configuration they must give it the same cache_size; a reload may
	// change it. Default: "default".
	CacheName string `json:"cache_name,omitempty"`

	// CacheSize is the store's memory budget in bytes; when it is full, the
	// least useful sessions are evicted, which costs them one more forwarded
	// request. Default: 256MiB.
	CacheSize int64 `json:"cache_size,omitempty"`

	// verifications are the sampled requests being verified after their
	// answer; Cleanup waits for them.
	verifications *sync.WaitGroup
	sampled       *atomic.Int64 // requests drawn for verification so far
	// onMismatch, when set (tests do), also gets each mismatch found.
	onMismatch func(Mismatch)

	mode    requestMode // where session and shared mode differ (mode.go)
	store   *cache.Store
	stored  bool // this instance holds a reference in the store pool
	params  *paramNotes
	logger  *zap.Logger
	metrics *metrics
	now     func() time.Time
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.zulip_presence",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision fills in defaults and attaches the handler to its store.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.now == nil {
		h.now = time.Now
	}
	h.fillDefaults()
	h.mode = requestModeOf(h.Mode)
	h.params = new(paramNotes)
	h.verifications, h.sampled = new(sync.WaitGroup), new(atomic.Int64)
	m, err := registerMetrics(ctx.GetMetricsRegistry())
	if err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}
	h.metrics = m
	if err := claimStoreSize(h.CacheName, h.CacheSize, ctx.Done()); err != nil {
		return err
	}
	store, err := loadStore(h.CacheName, h.storeConfig())
	if err != nil {
		return fmt.Errorf("creating store %q: %v", h.CacheName, err)
	}
	h.store, h.stored = store, true
	return nil
}

func (h *Handler) fillDefaults() {
	if h.PresenceUpdateMinFreq == nil {
		d := caddy.Duration(defaultMinFreq)
		h.PresenceUpdateMinFreq = &d
	}
	if h.PresenceLegacyEventOffset == nil {
		d := caddy.Duration(defaultLegacyOffset)
		h.PresenceLegacyEventOffset = &d
	}
	if h.CoalesceWindow == 0 {
		h.CoalesceWindow = *h.PresenceUpdateMinFreq
	}
	if h.Mode == "" {
		h.Mode = modeSession
	}
	if h.MaxStaleness == 0 {
		h.MaxStaleness = caddy.Duration(defaultMaxStaleness)
	}
	if h.TrustWindow == 0 {
		h.TrustWindow = h.CoalesceWindow
	}
	if h.TrustWindow == 0 {
		// No local answers (presence_update_min_freq 0), but shared
		// mode still trusts a session this long.
		h.TrustWindow = caddy.Duration(defaultCoalesceWindow)
	}
	if h.ResyncInterval == 0 {
		h.ResyncInterval = caddy.Duration(defaultResync)
	}
	if h.UsersRefresh == 0 {
		h.UsersRefresh = caddy.Duration(defaultUsersRefresh)
	}
	if h.MaxBody == 0 {
		h.MaxBody = defaultMaxBody
	}
	if h.CacheName == "" {
		h.CacheName = defaultCacheName
	}
	if h.CacheSize == 0 {
		h.CacheSize = defaultCacheSize
	}
}

func (h *Handler) storeConfig() cache.Config {
	// Nothing a session holds is useful after a resync interval without
	// traffic: its trust has lapsed and its snapshot must be rebuilt.
	ttl := max(time.Duration(h.ResyncInterval), time.Duration(h.TrustWindow)) * 2
	return cache.Config{MaxCost: h.CacheSize, TTL: ttl}
}

// Validate rejects settings that would lose writes or make no sense.
func (h *Handler) Validate() error {
	switch {
	case h.Mode != modeSession && h.Mode != modeShared:
		return fmt.Errorf("mode must be session or shared, not %q", h.Mode)
	case h.MaxStaleness <= 0:
		return fmt.Errorf("max_staleness must be positive")
	case *h.PresenceUpdateMinFreq < 0:
		return fmt.Errorf("presence_update_min_freq must not be negative")
	case *h.PresenceLegacyEventOffset < 0 || time.Duration(*h.PresenceLegacyEventOffset)%time.Second != 0:
		return fmt.Errorf("presence_legacy_event_offset must be whole seconds, not negative")
	case h.CoalesceWindow < 0 || (h.CoalesceWindow == 0 && *h.PresenceUpdateMinFreq > 0):
		return fmt.Errorf("coalesce_window must be positive")
	case h.CoalesceWindow > *h.PresenceUpdateMinFreq:
		return fmt.Errorf("coalesce_window %v exceeds presence_update_min_freq %v, Zulip's write threshold: writes would be lost", time.Duration(h.CoalesceWindow), time.Duration(*h.PresenceUpdateMinFreq))
	case h.TrustWindow <= 0:
		return fmt.Errorf("trust_window must be positive")
	case time.Duration(h.TrustWindow) > maxTrustWindow:
		return fmt.Errorf("trust_window %v exceeds %v: a revoked key could be answered that long", time.Duration(h.TrustWindow), maxTrustWindow)
	case time.Duration(h.ResyncInterval) < time.Duration(h.CoalesceWindow):
		return fmt.Errorf("resync_interval must be at least coalesce_window")
	case h.VerifyRate != nil && !(*h.VerifyRate >= 0 && *h.VerifyRate <= 1):
		return fmt.Errorf("verify_rate must be between 0 and 1")
	case h.storesEveryWrite() && (h.Shadow || (h.VerifyRate != nil && *h.VerifyRate > 0)):
		// Both send a write twice (the client's, then the handler's own
		// fetch or the resent original); with 0 the server stores both.
		return fmt.Errorf("shadow and verify_rate need presence_update_min_freq above 0: a server that stores every write would store their second write too")
	case h.UsersRefresh <= 0:
		return fmt.Errorf("users_refresh must be positive")
	case h.MaxBody <= 0:
		return fmt.Errorf("max_body must be positive")
	case h.CacheSize < minCacheSize:
		return fmt.Errorf("cache_size must be at least 1MiB")
	case h.CacheSize > maxCacheSize:
		// ristretto allocates its admission counters up front, about a
		// twentieth of cache_size: a typo (256GiB for 256MiB) would take
		// the machine's memory at startup.
		return fmt.Errorf("cache_size must be at most 16GiB")
	}
	return nil
}

// storesEveryWrite reports whether the server stores every presence write
// (PRESENCE_UPDATE_MIN_FREQ_SECONDS 0): then no write may be sent twice,
// as a verification, a shadow comparison or a web app tab joining the
// shared view would.
func (h *Handler) storesEveryWrite() bool {
	return *h.PresenceUpdateMinFreq == 0
}

// Cleanup releases this instance's reference to its store. Caddy calls it
// even after a failed Provision, so it releases only what was taken.
func (h *Handler) Cleanup() error {
	if h.verifications != nil {
		h.verifications.Wait()
	}
	if !h.stored {
		return nil
	}
	h.stored = false
	_, err := storePool.Delete(h.CacheName)
	return err
}

// WaitVerifications waits for the verifications of answers already given
// (verify_rate) to finish. Tests and the benchmark, which drive a virtual
// clock, call it before moving the clock on, as the verification would
// take milliseconds of a real one.
func (h *Handler) WaitVerifications() {
	if h.verifications != nil {
		h.verifications.Wait()
	}
}

// SetClock replaces the handler's clock; tests and the benchmark use it to
// run simulated hours in seconds. Call it before the first request.
func (h *Handler) SetClock(now func() time.Time) { h.now = now }

// ServeHTTP handles presence requests and hands everything else to next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	family, ok := presenceFamily(r)
	if !ok {
		return next.ServeHTTP(w, r)
	}
	c := &call{h: h, w: w, r: r, next: next, requester: requester{family: family}}
	return c.serve()
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
