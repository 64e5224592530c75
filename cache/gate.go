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

// Ticket is a reserved forward. It must be settled exactly once.
type Ticket struct {
	at        time.Time
	w         Write
	prevInput time.Time
	valid     bool
}

// needsWrite reports whether the server must see this write now: when the
// session is not trusted, when the write may change the user's row, or when
// it reports new input the server has not heard of within the window.
func (s *Session) needsWrite(now time.Time, w Write, window time.Duration, row *Row) bool {
	switch {
	case s.ok.IsZero() || now.Sub(s.ok) > window:
		return true // no trust: only the server may answer
	case w.Input && now.Sub(s.input) >= window:
		return true
	}
	return !row.quiet(now, w, window)
}

// Admit decides whether a ping's write must be forwarded. It returns
// forward=false when the session is trusted and the write would surely be
// a no-op on the user's row, so the ping can be answered locally.
// Otherwise the write is reserved and the returned Ticket must be passed
// to Settle.
//
// While another forward of the session is in flight, Admit waits for its
// outcome: a local answer must never rest on a write the server may still
// refuse, and two tabs must not forward the same write.
func (s *Session) Admit(ctx context.Context, now func() time.Time, w Write, window time.Duration, row *Row) (Ticket, bool, error) {
	for {
		s.mu.Lock()
		if s.inflight == nil {
			t := now()
			if !s.needsWrite(t, w, window, row) {
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
	tk := Ticket{at: now, w: w, prevInput: s.input, valid: true}
	if w.Input && now.Sub(s.input) >= window {
		s.input = now
	}
	return tk
}

// Settle records the server's answer to a reserved write: a 2xx refreshes
// the session's trust and moves the user's row as Zulip moved it; a 401 or
// 403 forgets what the session knew; anything else may or may not have
// been written, and the session's input report is rolled back so that the
// next request retries it.
func (s *Session) Settle(t Ticket, o Outcome, now time.Time, window time.Duration, row *Row) {
	if !t.valid {
		return
	}
	switch o {
	case OutcomeOK:
		row.confirm(t.at, t.w, window)
	case OutcomeFailed:
		row.Unsure(t.at)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch o {
	case OutcomeOK:
		s.ok = now
	case OutcomeDenied:
		// The caller also drops the session from the store, so the
		// conversion state goes with it.
		s.ok, s.input = time.Time{}, time.Time{}
	default:
		if s.input.Equal(t.at) {
			s.input = t.prevInput
		}
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
	return !s.ok.IsZero() && now.Sub(s.ok) <= window
}
