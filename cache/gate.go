package cache

import "time"

// Write describes the presence write a request carries.
type Write struct {
	// Active is true for status=active.
	Active bool
	// Input is true for new_user_input=true.
	Input bool
}

// Policy holds the windows the gate decides with.
type Policy struct {
	// Window is Zulip's write rule as configured (coalesce_window): a
	// stored time younger than this is not written again.
	Window time.Duration
	// Trust is how long a session's last success lets it be answered
	// without the server (trust_window).
	Trust time.Duration
}

// Verdict is what the server answered to a forwarded write. (The
// outcome label of the handler's metrics is another thing: what the
// handler did with a request.)
type Verdict uint8

const (
	// VerdictOK is Zulip's JSON success: the credentials work.
	VerdictOK Verdict = iota
	// VerdictDenied is a 401 or 403: the credentials no longer work.
	VerdictDenied
	// VerdictFailed is any other answer, a transport error, or an
	// aborted request.
	VerdictFailed
)

// Decision is the gate's answer to a ping.
type Decision uint8

const (
	// Local: the ping may be answered without the server.
	Local Decision = iota
	// Forward: the write is reserved; forward it and Settle the Ticket.
	Forward
	// Wait: another forward of the session decides this ping's fate; wait
	// for it to settle, then ask again.
	Wait
	// Prepare: the session is trusted, so knowing the user's row may let
	// the ping be answered locally; find the row, then ask again.
	Prepare
)

// Ticket is a reserved forward. It must be settled exactly once.
type Ticket struct {
	at        time.Time
	prevInput time.Time
	valid     bool
}

// Ping is a ping the gate decides on.
type Ping struct {
	// Now is the proxy's clock.
	Now time.Time
	// ServerNow is the latest the server's clock can read at Now;
	// ServerKnown is false when the proxy cannot tell.
	ServerNow   time.Time
	ServerKnown bool
	// Write is the write the ping carries.
	Write Write
	// Row is the mirror of the user's row, nil while the session is not
	// bound to a user.
	Row *RowMirror
	// Prepared tells that the caller already tried to find Row.
	Prepared bool
}

// Admission is the gate's decision on a ping.
type Admission struct {
	Decision Decision
	// Ticket is the write reserved, when Decision is Forward.
	Ticket Ticket
	// Wait is closed when the session's forward in flight settles, when
	// Decision is Wait.
	Wait <-chan struct{}
}

// Admit decides a ping under the policy p.
//
// A ping is answered locally only when the session is trusted, its input
// report is not due, and the write would surely be a no-op on the user's
// row. Such a ping needs no other forward's outcome, so it never waits.
// Otherwise, while another forward of the session is in flight, the ping
// waits for it: its outcome decides whether this ping still needs the
// server, and two tabs must not forward the same write.
func (s *Session) Admit(ping Ping, p Policy) Admission {
	s.mu.Lock()
	defer s.mu.Unlock()
	trusted := s.trustedLocked(ping.Now, p.Trust)
	if trusted && !ping.Prepared {
		return Admission{Decision: Prepare}
	}
	w := ping.Write
	inputDue := w.Input && (s.inflight != nil || ping.Now.Sub(s.inputAt) >= p.Window)
	if trusted && !inputDue && ping.ServerKnown && ping.Row != nil && ping.Row.WriteIsNoOp(ping.ServerNow, w, p.Window) {
		return Admission{Decision: Local}
	}
	if s.inflight != nil {
		return Admission{Decision: Wait, Wait: s.inflight}
	}
	return Admission{Decision: Forward, Ticket: s.reserveLocked(ping.Now, w, p.Window)}
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
	tk := Ticket{at: now, prevInput: s.inputAt, valid: true}
	if w.Input && now.Sub(s.inputAt) >= window {
		s.inputAt = now
	}
	return tk
}

// Settle records the server's answer to a reserved write: a success makes
// the session trusted from the moment the write was sent; a 401 or 403
// forgets the trust; anything else may or may not have been processed, so
// the session's input report is rolled back for the next request to retry.
// Settling a ticket twice, or the zero Ticket, does nothing.
func (s *Session) Settle(t *Ticket, o Verdict) {
	if !t.valid {
		return
	}
	t.valid = false
	s.mu.Lock()
	defer s.mu.Unlock()
	switch o {
	case VerdictOK:
		s.trustedAt = later(s.trustedAt, t.at)
	case VerdictDenied:
		s.trustedAt, s.inputAt = time.Time{}, time.Time{}
	default:
		if s.inputAt.Equal(t.at) {
			s.inputAt = t.prevInput
		}
	}
	s.pending--
	if s.pending == 0 {
		close(s.inflight)
		s.inflight = nil
	}
}

// Revoke forgets the session's trust: the server refused its credentials
// on a request the proxy made for it.
func (s *Session) Revoke() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.trustedAt, s.inputAt = time.Time{}, time.Time{}
}

// Trusted reports whether the server answered this session with a success
// within the trust window before now.
func (s *Session) Trusted(now time.Time, trust time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.trustedLocked(now, trust)
}

func (s *Session) trustedLocked(now time.Time, trust time.Duration) bool {
	return !s.trustedAt.IsZero() && now.Sub(s.trustedAt) <= trust
}
