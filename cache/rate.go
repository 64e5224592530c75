package cache

import "time"

// Zulip's api_by_user rate limit (zproject/default_settings.py
// RATE_LIMITING_RULES): 200 requests per 60 s per user, every
// authenticated endpoint counted alike, the proxy's own requests
// included.
const (
	RateWindow = 60 * time.Second
	RateLimit  = 200
)

// RatePolicy is how the proxy spends a user's rate limit on requests of
// its own (design §7.6).
type RatePolicy struct {
	// Reserve is the least X-RateLimit-Remaining, as Zulip last reported it
	// within the window and less what the proxy spent since, at which the
	// proxy still spends one of the user's requests.
	Reserve int
	// Credit is how many requests the proxy may spend in a window beyond
	// those it saved the user in that window (pings answered without the
	// server): the user's id and one row read, without which it could
	// never answer a ping locally, and so never save one.
	Credit int
}

// DefaultRatePolicy is the policy of design §7.6.
var DefaultRatePolicy = RatePolicy{Reserve: 50, Credit: 2}

// Unlimited is what is left of a rate limit the server does not enforce
// (RATE_LIMITING off: its successes carry no X-RateLimit headers).
const Unlimited = 1 << 30

// rateRing is how many of the latest savings and spendings a budget
// remembers; spending is bounded by it, so no more need be kept.
const rateRing = 4

// Budget is what the proxy knows of one user's rate limit: what Zulip
// last reported left, and the requests the proxy saved and spent of the
// user's in the latest window. Its methods are called with the owner's
// lock held.
type Budget struct {
	remaining   int32
	remainingAt int64 // proxy clock, Unix ns; 0: nothing reported
	spentSince  int32 // spent after remainingAt
	saved       [rateRing]int64
	spent       [rateRing]int64
	nSaved      uint8 // next slot of saved
	nSpent      uint8
}

func (b *Budget) observe(remaining int, at time.Time) {
	if t := at.UnixNano(); t >= b.remainingAt {
		b.remaining, b.remainingAt, b.spentSince = int32(remaining), t, 0
	}
}

func (b *Budget) save(at time.Time) {
	b.saved[b.nSaved%rateRing] = at.UnixNano()
	b.nSaved++
}

// inWindow counts the times of ring within the window ending at now.
func inWindow(ring *[rateRing]int64, now time.Time) int {
	from, n := now.Add(-RateWindow).UnixNano(), 0
	for _, t := range ring {
		if t != 0 && t > from {
			n++
		}
	}
	return n
}

// known reports whether what Zulip reported still holds at now.
func (b *Budget) known(now time.Time) bool {
	return b.remainingAt != 0 && now.Sub(time.Unix(0, b.remainingAt)) < RateWindow
}

// spend reports whether the policy lets the proxy spend one of the
// user's requests at now, and records the spending if so.
func (b *Budget) spend(now time.Time, p RatePolicy) bool {
	if b.remainingAt == 0 {
		return false // Zulip never said
	}
	// A report older than the window still bounds what is left from
	// below, for the user's requests the proxy saw: the window slid
	// since, and each of them that reached the server reported anew.
	// A client that polls once a minute has no fresher one.
	if b.remaining >= Unlimited {
		return true // the server enforces no limit
	}
	if int(b.remaining)-int(b.spentSince) <= p.Reserve {
		return false
	}
	spent := inWindow(&b.spent, now)
	if spent >= rateRing || spent >= inWindow(&b.saved, now)+p.Credit {
		return false
	}
	b.spent[b.nSpent%rateRing] = now.UnixNano()
	b.nSpent++
	b.spentSince++
	return true
}
