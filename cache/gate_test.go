package cache

import (
	"context"
	"sync"
	"testing"
	"time"
)

const window = 55 * time.Second

var t0 = time.Date(2026, 11, 2, 9, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

func clockAt(sec float64) func() time.Time { return func() time.Time { return at(sec) } }

// trusted returns a session and its user's row, after writes the server
// confirmed at -100 s (so the row is known exactly) and at 0.
func trusted() (*Session, *Row) {
	s, row := &Session{}, newRow(at(-200))
	for _, sec := range []float64{-100, 0} {
		tk := s.Reserve(at(sec), Write{}, window)
		s.Settle(tk, OutcomeOK, at(sec), window, row)
	}
	return s, row
}

func TestGateDecisions(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(s *Session, row *Row)
		now     float64
		w       Write
		forward bool
	}{
		{"repeat idle within window", nil, 54, Write{}, false},
		{"repeat idle at the window", nil, 55, Write{}, false},
		{"repeat idle past the window", nil, 55.001, Write{}, true},
		{"first active after idle writes", nil, 10, Write{Active: true}, true},
		{"first input", nil, 10, Write{Input: true}, true},
		{"trust lapsed after a failure", func(s *Session, row *Row) {
			tk := s.Reserve(at(30), Write{}, window)
			s.Settle(tk, OutcomeFailed, at(30), window, row)
		}, 56, Write{}, true},
		{"active repeat within window", func(s *Session, row *Row) {
			tk := s.Reserve(at(10), Write{Active: true, Input: true}, window)
			s.Settle(tk, OutcomeOK, at(10), window, row)
		}, 40, Write{Active: true, Input: true}, false},
		{"denied forgets the trust", func(s *Session, row *Row) {
			tk := s.Reserve(at(10), Write{}, window)
			s.Settle(tk, OutcomeDenied, at(10), window, row)
		}, 11, Write{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, row := trusted()
			if tc.prepare != nil {
				tc.prepare(s, row)
			}
			tk, forward, err := s.Admit(context.Background(), clockAt(tc.now), tc.w, window, row)
			if err != nil {
				t.Fatal(err)
			}
			if forward != tc.forward {
				t.Fatalf("forward = %v, want %v", forward, tc.forward)
			}
			if forward {
				s.Settle(tk, OutcomeOK, at(tc.now), window, row)
			}
		})
	}
	if _, forward, _ := (&Session{}).Admit(context.Background(), clockAt(0), Write{}, window, newRow(at(0))); !forward {
		t.Fatal("a session without state was answered locally")
	}
}

// TestPollWithinWindowKeepsWriteTime: a poll forwarded 20 s after a write
// is a no-op on the server, so it must not move the time the next write is
// due; otherwise a ping 56 s after the real write would be answered
// locally while Zulip would have written.
func TestPollWithinWindowKeepsWriteTime(t *testing.T) {
	s, row := trusted()
	tk := s.Reserve(at(20), Write{}, window)
	s.Settle(tk, OutcomeOK, at(20), window, row)
	if _, forward, _ := s.Admit(context.Background(), clockAt(56), Write{}, window, row); !forward {
		t.Fatal("the write due at 56 s was answered locally")
	}
}

// TestRowSharedBySessions is the phone-and-browser case: the phone writes
// the row at 0; the browser's write at 30 is a no-op for Zulip; at 60 Zulip
// writes again, so the browser's ping must be forwarded.
func TestRowSharedBySessions(t *testing.T) {
	row := newRow(at(-1000))
	phone, browser := &Session{}, &Session{}
	for _, step := range []struct {
		s   *Session
		sec float64
	}{{phone, -200}, {phone, 0}, {browser, 30}} {
		tk := step.s.Reserve(at(step.sec), Write{}, window)
		step.s.Settle(tk, OutcomeOK, at(step.sec), window, row)
	}
	if _, forward, _ := browser.Admit(context.Background(), clockAt(56), Write{}, window, row); !forward {
		t.Fatal("the write Zulip makes at 56 s was answered locally")
	}
}

func TestFailedInputIsRetried(t *testing.T) {
	s, row := trusted()
	tk := s.Reserve(at(10), Write{Input: true}, window)
	s.Settle(tk, OutcomeFailed, at(10), window, row)
	if _, forward, _ := s.Admit(context.Background(), clockAt(11), Write{Input: true}, window, row); !forward {
		t.Fatal("a failed new_user_input was not retried")
	}
}

// TestAdmitWaitsForInflight: a ping arriving while a write of its session
// is in flight is not answered locally until that write is confirmed, and
// concurrent pings never forward the same write twice.
func TestAdmitWaitsForInflight(t *testing.T) {
	s, row := trusted()
	tk := s.Reserve(at(60), Write{}, window)
	var wg sync.WaitGroup
	var mu sync.Mutex
	forwards := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk, forward, err := s.Admit(context.Background(), clockAt(61), Write{}, window, row)
			if err != nil {
				t.Error(err)
				return
			}
			if forward {
				mu.Lock()
				forwards++
				mu.Unlock()
				s.Settle(tk, OutcomeOK, at(61), window, row)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // let them block on the in-flight write
	s.Settle(tk, OutcomeFailed, at(61), window, row)
	wg.Wait()
	if forwards != 1 {
		t.Fatalf("%d pings forwarded after the in-flight write failed, want exactly 1", forwards)
	}
}

func TestAdmitGivesUpWithTheClient(t *testing.T) {
	s, row := trusted()
	s.Reserve(at(60), Write{}, window)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Admit(ctx, clockAt(61), Write{}, window, row); err == nil {
		t.Fatal("Admit did not return when the request was cancelled")
	}
}

func TestTrusted(t *testing.T) {
	s, _ := trusted()
	if !s.Trusted(at(55), window) || s.Trusted(at(55.001), window) {
		t.Fatal("trust must last exactly the window after the last 2xx")
	}
	if (&Session{}).Trusted(at(0), window) {
		t.Fatal("a new session is trusted")
	}
}
