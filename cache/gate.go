package cache

import (
	"context"
	"time"
)

// Write describes the presence write a request carries.
type Write struct {
	// Active is true for status=active.
	Active bool
	// Input is true for new_user_input=true.
	Input bool
}

// Outcome is what the server answered to a forwarded write.
type Outcome uint8

const (
	// OutcomeOK is a 2xx: the write happened and the session is trusted.
	OutcomeOK Outcome = iota
	// OutcomeDenied is a 401 or 403: the credentials no longer work.
	OutcomeDenied
	// OutcomeFailed is any other answer or a transport error.
	OutcomeFailed
)

// gateTimes are the per-session times the write gate decides from.
type gateTimes struct {
	write  time.Time // last forwarded write
	active time.Time // last forwarded status=active
	input  time.Time // last forwarded new_user_input=true
	ok     time.Time // last 2xx: the session's trust
}

// Ticket is a reserved forward. It must be settled exactly once.
type Ticket struct {
	at    time.Time
	w     Write
	prev  gateTimes
	valid bool
}

// needsWrite reports whether the server must see this write now. Zulip
// overwrites a stored timestamp only when it is more than 55 s old (strictly:
// zerver/actions/presence.py compares with >), so the gate mirrors the
// stored times and forwards exactly the writes that would change them.
func (g *gateTimes) needsWrite(now time.Time, w Write, window time.Duration) bool {
	switch {
	case g.ok.IsZero() || now.Sub(g.ok) > window:
		return true // no trust: only the server may answer
	case g.wouldWrite(now, window):
		return true
	case w.Active && g.wouldWriteActive(now, window):
		return true
	case w.Input && now.Sub(g.input) >= window:
		return true
	}
	return false
}

// wouldWrite reports whether the server would move last_connected_time.
func (g *gateTimes) wouldWrite(now time.Time, window time.Duration) bool {
	return g.write.IsZero() || now.Sub(g.write) > window
}

// wouldWriteActive reports whether the server would move last_active_time.
func (g *gateTimes) wouldWriteActive(now time.Time, window time.Duration) bool {
	return g.active.IsZero() || now.Sub(g.active) > window
}

// reserve records the write as forwarded at now, so that concurrent
// requests of the session do not forward it again. A stored time moves
// only when the server would move it: a write forwarded within the window
// (every poll is forwarded) is a no-op there and must not push the next
// real write back.
func (g *gateTimes) reserve(now time.Time, w Write, window time.Duration) Ticket {
	t := Ticket{at: now, w: w, prev: *g, valid: true}
	if g.wouldWrite(now, window) {
		g.write = now
	}
	if w.Active && g.wouldWriteActive(now, window) {
		g.active = now
		g.write = now // Zulip keeps connected ≥ active
	}
	if w.Input && (g.input.IsZero() || now.Sub(g.input) >= window) {
		g.input = now
	}
	return t
}

// rollback undoes a reservation whose write did not reach the server,
// unless a later reservation has replaced it since.
func (g *gateTimes) rollback(t Ticket) {
	if g.write.Equal(t.at) {
		g.write = t.prev.write
	}
	if g.active.Equal(t.at) {
		g.active = t.prev.active
	}
	if g.input.Equal(t.at) {
		g.input = t.prev.input
	}
}

// Admit decides whether a ping's write must be forwarded. It returns
// forward=false when the session is trusted and the write would be a no-op
// on the server, so the ping can be answered locally. Otherwise the write is
// reserved and the returned Ticket must be passed to Settle.
//
// While another forward of the session is in flight, Admit waits for its
// outcome: a local answer must never rest on a write the server may still
// refuse.
func (s *Session) Admit(ctx context.Context, now func() time.Time, w Write, window time.Duration) (Ticket, bool, error) {
	for {
		s.mu.Lock()
		if s.inflight == nil {
			t := now()
			if !s.gate.needsWrite(t, w, window) {
				s.mu.Unlock()
				return Ticket{}, false, nil
			}
			tk := s.reserveLocked(t, w, window)
			s.mu.Unlock()
			return tk, true, nil
		}
		wait := s.inflight
		s.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return Ticket{}, false, ctx.Err()
		}
	}
}

// Reserve records a write that is forwarded whatever the gate says (polls
// always reach the server) and returns its Ticket for Settle.
func (s *Session) Reserve(now time.Time, w Write, window time.Duration) Ticket {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reserveLocked(now, w, window)
}

func (s *Session) reserveLocked(now time.Time, w Write, window time.Duration) Ticket {
	if s.inflight == nil {
		s.inflight = make(chan struct{})
	}
	s.pending++
	return s.gate.reserve(now, w, window)
}

// Settle records the server's answer to a reserved write: a 2xx refreshes
// the session's trust, a 401 or 403 forgets everything the session knew,
// anything else rolls the reservation back so the next request retries it.
func (s *Session) Settle(t Ticket, o Outcome, now time.Time) {
	if !t.valid {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch o {
	case OutcomeOK:
		s.gate.ok = now
	case OutcomeDenied:
		// The caller also drops the session from the store, so the
		// conversion state goes with it.
		s.gate = gateTimes{}
	default:
		s.gate.rollback(t)
	}
	s.pending--
	if s.pending == 0 && s.inflight != nil {
		close(s.inflight)
		s.inflight = nil
	}
}

// Trusted reports whether the server answered this session with a 2xx
// within the window before now.
func (s *Session) Trusted(now time.Time, window time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.gate.ok.IsZero() && now.Sub(s.gate.ok) <= window
}
