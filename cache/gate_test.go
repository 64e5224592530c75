package cache

import (
	"testing"
	"time"
)

const window = 55 * time.Second

var policy = Policy{Window: window, Trust: window}

var t0 = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

// trusted returns a session the server accepted at 0, and its user's row,
// stored at 0 by the server's clock, which reads skew ahead of the proxy's.
func trusted(skew time.Duration) (*Session, *RowMirror) {
	s, row := &Session{}, &RowMirror{}
	tk := s.Reserve(at(0), Write{}, window)
	s.Settle(&tk, VerdictOK)
	row.SetUser(1, at(-1e6), time.Microsecond)
	row.ReadRow(at(0).Add(skew).Unix(), at(0).Add(skew).Unix())
	return s, row
}

func admit(s *Session, row *RowMirror, sec float64, skew time.Duration, w Write) (Ticket, Decision) {
	a := s.Admit(Ping{Now: at(sec), ServerNow: at(sec).Add(skew), ServerKnown: true, Write: w, Row: row, Prepared: true}, policy)
	return a.Ticket, a.Decision
}

func TestGateDecisions(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(s *Session, row *RowMirror)
		now     float64
		w       Write
		want    Decision
	}{
		{"repeat idle within window", nil, 54, Write{}, Local},
		{"repeat idle at the window", nil, 55, Write{}, Local},
		{"repeat idle past the window", nil, 55.001, Write{}, Forward},
		{"first active after idle writes", func(s *Session, row *RowMirror) { row.active = time.Time{} }, 10, Write{Active: true}, Forward},
		{"first input", nil, 10, Write{Input: true}, Forward},
		{"input repeated within the window", func(s *Session, row *RowMirror) {
			tk := s.Reserve(at(5), Write{Input: true}, window)
			s.Settle(&tk, VerdictOK)
		}, 10, Write{Input: true}, Local},
		{"input retried after a failure", func(s *Session, row *RowMirror) {
			tk := s.Reserve(at(5), Write{Input: true}, window)
			s.Settle(&tk, VerdictFailed)
		}, 10, Write{Input: true}, Forward},
		{"denied forgets the trust", func(s *Session, row *RowMirror) {
			tk := s.Reserve(at(10), Write{}, window)
			s.Settle(&tk, VerdictDenied)
		}, 11, Write{}, Forward},
		{"trust lapses after its window", nil, 55.5, Write{}, Forward},
	}
	for _, skew := range []time.Duration{0, -60 * time.Second, 60 * time.Second} {
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				s, row := trusted(skew)
				if tc.prepare != nil {
					tc.prepare(s, row)
				}
				tk, d := admit(s, row, tc.now, skew, tc.w)
				if d != tc.want {
					t.Fatalf("skew %v: decision %d, want %d", skew, d, tc.want)
				}
				s.Settle(&tk, VerdictOK)
			})
		}
	}
	if d := (&Session{}).Admit(Ping{Now: at(0), ServerNow: at(0), ServerKnown: true, Row: &RowMirror{}, Prepared: true}, policy).Decision; d != Forward {
		t.Fatal("a session without state was answered locally")
	}
	s, row := trusted(0)
	if d := s.Admit(Ping{Now: at(1), Row: row, Prepared: true}, policy).Decision; d != Forward {
		t.Fatal("a ping was answered locally with the server's clock unknown")
	}
}

// TestAdmitDoesNotWaitWhenQuiet: a ping whose write is a no-op whatever
// the in-flight forward's outcome is answered at once; one that the
// outcome decides waits for it, and after a failure exactly one of the
// waiting pings is forwarded.
func TestAdmitDoesNotWaitWhenQuiet(t *testing.T) {
	s, row := trusted(0)
	inflight := s.Reserve(at(10), Write{}, window) // a slow poll
	if _, d := admit(s, row, 11, 0, Write{}); d != Local {
		t.Fatalf("a quiet ping waited for the in-flight poll: decision %d", d)
	}
	a := s.Admit(Ping{Now: at(11), ServerNow: at(11), ServerKnown: true, Write: Write{Input: true}, Row: row, Prepared: true}, policy)
	d, wait := a.Decision, a.Wait
	if d != Wait || wait == nil {
		t.Fatalf("an input report did not wait for the in-flight write: decision %d", d)
	}
	s.Settle(&inflight, VerdictFailed)
	select {
	case <-wait:
	default:
		t.Fatal("settling did not release the waiting ping")
	}
	first, d := admit(s, row, 11, 0, Write{Input: true})
	if d != Forward {
		t.Fatalf("after the failure the input report was not forwarded: decision %d", d)
	}
	if _, d := admit(s, row, 11, 0, Write{Input: true}); d != Wait {
		t.Fatalf("a second tab forwarded the same input report: decision %d", d)
	}
	s.Settle(&first, VerdictOK)
	if _, d := admit(s, row, 12, 0, Write{Input: true}); d != Local {
		t.Fatalf("the reported input was forwarded again: decision %d", d)
	}
}

// TestSettleIsIdempotent: a ticket settled by the handler and again by its
// release on the way out settles once.
func TestSettleIsIdempotent(t *testing.T) {
	s := &Session{}
	a := s.Reserve(at(0), Write{}, window)
	b := s.Reserve(at(0), Write{}, window)
	s.Settle(&a, VerdictOK)
	s.Settle(&a, VerdictFailed)
	if d := s.Admit(Ping{Now: at(1), ServerNow: at(1), ServerKnown: true, Row: &RowMirror{}, Prepared: true}, policy).Decision; d != Wait {
		t.Fatal("settling one ticket twice released another's reservation")
	}
	s.Settle(&b, VerdictFailed)
	var zero Ticket
	s.Settle(&zero, VerdictFailed)
	if d := s.Admit(Ping{Now: at(1), ServerNow: at(1), ServerKnown: true, Row: &RowMirror{}, Prepared: true}, policy).Decision; d != Forward {
		t.Fatal("the session still waits after every ticket settled")
	}
}

func TestTrusted(t *testing.T) {
	s, _ := trusted(0)
	if !s.Trusted(at(55), window) || s.Trusted(at(55.001), window) {
		t.Fatal("trust must last exactly the window after the last success")
	}
	if (&Session{}).Trusted(at(0), window) {
		t.Fatal("a new session is trusted")
	}
}
