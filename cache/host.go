package cache

import (
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// Host is what the proxy learned about one upstream host (one Zulip realm):
// how its clock stands to the proxy's, whether it understands incremental
// fetches, and the headers it sends with a ping's answer. It is created only
// once a session of the host was accepted by the server, so made-up Host
// headers cost nothing lasting.
type Host struct {
	stored             lease // the store's
	mu                 sync.Mutex
	offset             offset
	noIncrementalUntil time.Time
	legacyReadsUntil   time.Time     // the one-user read answers the legacy shape
	historyLimit       int8          // history_limit_days: 0 not seen, 1 taken, -1 ignored
	historyLimitUntil  time.Time     // until when historyLimit is trusted
	pingHeaders        []*PingHeader // interned; at most maxPingHeaders
	nextPingHeader     int           // the slot a new template replaces once full
	date               []string      // an HTTP date of the server's clock, for dateSec
	dateSec            int64
	// plainPings and fullerPings are sets of presence.Param masks: bit m
	// says that the host's latest success to a ping sending exactly the
	// parameters m was Zulip's bare ping answer, or more than it.
	plainPings, fullerPings uint64
	// extraKeys says that the host's presence answers carry a key of
	// their own (a zephyr-mirror realm's zephyr_mirror_active).
	extraKeys bool

	// Members is held by the request fetching the host's user list, so
	// that a burst of legacy polls fetches it once.
	Members Flight
}

// hostCost is the memory of a Host without ping header templates,
// ristretto's entry for it included, and pingHeaderCost that of one
// typical template the host interns (see TestCostsMatchHeap).
const (
	hostCost       = 400
	pingHeaderCost = 480
)

// maxPingHeaders bounds the templates a host interns: one per set of
// headers its sessions' answers differ by (Content-Language, mostly) and
// per language asked for, as sent (browsers spell Accept-Language in
// many ways). A session whose template left the host keeps it, uncharged,
// until its next forwarded answer.
const maxPingHeaders = 32

// offset bounds the server's clock minus the proxy's: it lies in [lo, hi].
type offset struct {
	lo, hi time.Duration
	known  bool
	at     time.Time // proxy time of the exchange that started the interval
}

// offsetMaxAge is how long exchanges keep narrowing one interval before a
// new one starts, so that slow drift of either clock is followed.
const offsetMaxAge = 10 * time.Minute

// ObserveClock records one upstream exchange: the proxy sent the request at
// sent and had the answer at received (its own clock), and the server's
// clock read server, to within res (0 for server_timestamp, a second for
// an HTTP Date), while it handled the request. The server's clock minus
// the proxy's then lies in [server-received, server+res-sent].
func (h *Host) ObserveClock(sent, received, server time.Time, res time.Duration) {
	lo, hi := server.Sub(received), server.Add(res).Sub(sent)
	h.mu.Lock()
	defer h.mu.Unlock()
	o := &h.offset
	if o.known && received.Sub(o.at) < offsetMaxAge && lo <= o.hi && hi >= o.lo {
		o.lo, o.hi = max(o.lo, lo), min(o.hi, hi)
		return
	}
	// The first exchange, an old interval, or a clock that jumped: start
	// over from what this exchange says.
	*o = offset{lo: lo, hi: hi, known: true, at: received}
}

// ServerLatest returns the latest time the server's clock can read while
// the proxy's reads now, and false when no exchange has told it yet.
func (h *Host) ServerLatest(now time.Time) (time.Time, bool) {
	_, hi, ok := h.serverClock(now)
	return hi, ok
}

// serverClock returns the earliest and latest times the server's clock
// can read while the proxy's reads now, and false when no exchange has
// told them yet.
func (h *Host) serverClock(now time.Time) (lo, hi time.Time, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.offset.known {
		return time.Time{}, time.Time{}, false
	}
	return now.Add(h.offset.lo), now.Add(h.offset.hi), true
}

// ServerEstimate returns the server's clock as best known while the
// proxy's reads now: the middle of the interval, or now if none is known.
func (h *Host) ServerEstimate(now time.Time) time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.offset.known {
		return now
	}
	return now.Add(h.offset.lo + (h.offset.hi-h.offset.lo)/2)
}

// IncrementalUnsupported reports whether the host was found not to
// understand last_update_id (Zulip before 9.0) and that finding still holds
// at now.
func (h *Host) IncrementalUnsupported(now time.Time) bool {
	return h.before(now, &h.noIncrementalUntil)
}

// MarkIncrementalUnsupported stops conversion for the host until the given
// time.
func (h *Host) MarkIncrementalUnsupported(until time.Time) {
	h.setTime(&h.noIncrementalUntil, until)
}

// LegacyRowReads reports whether the host's last one-user presence read
// (GET /users/{id}/presence) answered the legacy shape, as every released
// Zulip through 11.x does, within the time MarkLegacyRowReads gave.
func (h *Host) LegacyRowReads(now time.Time) bool {
	return h.before(now, &h.legacyReadsUntil)
}

// MarkLegacyRowReads records until when the host is taken to answer
// one-user presence reads in the legacy shape only; the zero time records
// that it answered the slim shape.
func (h *Host) MarkLegacyRowReads(until time.Time) {
	h.setTime(&h.legacyReadsUntil, until)
}

// before reports, under the host's lock, whether now is before *until:
// whether a finding about the host that holds until then still does.
func (h *Host) before(now time.Time, until *time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return now.Before(*until)
}

// setTime sets one of the host's times under its lock.
func (h *Host) setTime(field *time.Time, t time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	*field = t
}

// HistoryLimitIgnored reports whether the host ignores history_limit_days
// (Zulip before 10.0, feature level 288, lists it in
// ignored_parameters_unsupported and answers its default window), as the
// last answer to a request that sent it told; known is false before any
// did, and again once that is older than MarkHistoryLimit allowed: the
// server may have been upgraded since.
func (h *Host) HistoryLimitIgnored(now time.Time) (ignored, known bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.historyLimitKnown(now)
}

func (h *Host) historyLimitKnown(now time.Time) (ignored, known bool) {
	if h.historyLimit == 0 || !now.Before(h.historyLimitUntil) {
		return false, false
	}
	return h.historyLimit < 0, true
}

// MarkHistoryLimit records what an answer to a request that sent
// history_limit_days told, whether the server listed it as ignored, and
// trusts it until until.
func (h *Host) MarkHistoryLimit(ignored bool, until time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.historyLimit, h.historyLimitUntil = 1, until
	if ignored {
		h.historyLimit = -1
	}
}

// ObservePingAnswer records whether the host's success to a ping that
// sent the documented parameters sent was Zulip's bare ping answer. It is
// not when the server ignores one of them (a Zulip before 10.0 lists
// history_limit_days in ignored_parameters_unsupported, one before 9.0
// last_update_id too) or adds a key of its own (a zephyr-mirror realm).
func (h *Host) ObservePingAnswer(sent presence.Param, plain bool) {
	bit := uint64(1) << (sent & 63)
	h.mu.Lock()
	defer h.mu.Unlock()
	if plain && !h.extraKeys {
		h.plainPings |= bit
		h.fullerPings &^= bit
		return
	}
	h.fullerPings |= bit
	h.plainPings &^= bit
}

// MarkExtraKeys records that a presence answer of the host carried a key
// Zulip's documented answers lack: its ping answers may too, so no ping
// answer seen before counts.
func (h *Host) MarkExtraKeys() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.extraKeys, h.plainPings = true, 0
}

// PlainPing reports whether the host answers a ping sending the
// parameters sent with the bare ping answer, the only body a local answer
// has: it did for these very parameters last time; or, not seen yet, they
// are ones every Zulip since 7.0 takes (status, ping_only,
// new_user_input, slim_presence; history_limit_days once the host was
// seen to take it), and no answer of the host was ever more than
// documented. A last_update_id, which a Zulip before 9.0 lists as
// ignored, needs the host's own answer first.
func (h *Host) PlainPing(sent presence.Param, now time.Time) bool {
	bit := uint64(1) << (sent & 63)
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.plainPings&bit != 0:
		return true
	case h.fullerPings != 0 || h.extraKeys || sent&presence.ParamLastUpdateID != 0:
		return false
	case sent&presence.ParamHistoryLimitDays != 0:
		ignored, known := h.historyLimitKnown(now)
		return known && !ignored
	}
	return true
}

// PingHeader is the header template of a server's answer to one
// session's request, repeated on the session's pings answered locally.
// Sessions whose answers carry the same headers share one.
type PingHeader struct {
	// Header must not be modified.
	Header map[string][]string
	// Language is what the request the server answered with Header asked
	// for: the template fits only requests that ask the same, since
	// Content-Language follows it.
	Language Language
}

// Language is what a request asks Zulip's LocaleMiddleware for, which
// picks the answer's Content-Language from it: the django_language
// cookie, then Accept-Language, as sent. All the clients of one user
// share a session (an API key, a browser's cookie) but not a language.
type Language struct {
	Cookie, Accept string
}

// internPingHeader returns the host's template equal to hdr for lang,
// adding one if there is none; added reports whether the host's
// templates changed, and so its cost.
func (h *Host) internPingHeader(hdr map[string][]string, lang Language) (p *PingHeader, added bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, p := range h.pingHeaders {
		if p.Language == lang && sameHeader(p.Header, hdr) {
			return p, false
		}
	}
	// Cloned: the request's strings would keep its whole header alive.
	lang = Language{Cookie: strings.Clone(lang.Cookie), Accept: strings.Clone(lang.Accept)}
	p = &PingHeader{Header: hdr, Language: lang}
	if len(h.pingHeaders) < maxPingHeaders {
		h.pingHeaders = append(h.pingHeaders, p)
		return p, true
	}
	// Full: the oldest slot goes; sessions holding its template keep it
	// until their next forwarded answer.
	h.pingHeaders[h.nextPingHeader] = p
	h.nextPingHeader = (h.nextPingHeader + 1) % maxPingHeaders
	return p, true
}

func (h *Host) cost() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	cost := int64(hostCost)
	for _, p := range h.pingHeaders {
		cost += pingHeaderCost + int64(len(p.Language.Cookie)+len(p.Language.Accept))
	}
	return cost
}

func sameHeader(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, va := range a {
		vb, ok := b[k]
		if !ok || len(va) != len(vb) {
			return false
		}
		for i := range va {
			if va[i] != vb[i] {
				return false
			}
		}
	}
	return true
}

// HTTPDate returns the server's clock while the proxy's reads now, as the
// value of a Date header. The value is shared until the second changes;
// the caller must not modify it.
func (h *Host) HTTPDate(now time.Time) []string {
	t := h.ServerEstimate(now).UTC()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.date == nil || t.Unix() != h.dateSec {
		h.date, h.dateSec = []string{t.Format(http.TimeFormat)}, t.Unix()
	}
	return h.date
}

// ServerEarliest returns the earliest time the server's clock can read
// while the proxy's reads now, and false when no exchange has told it yet.
func (h *Host) ServerEarliest(now time.Time) (time.Time, bool) {
	lo, _, ok := h.serverClock(now)
	return lo, ok
}
