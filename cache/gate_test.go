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

// trusted returns a session whose last write (idle, no input) at 0 was
// confirmed.
func trusted() *Session {
	s := &Session{}
	tk := s.Reserve(at(0), Write{}, window)
	s.Settle(tk, OutcomeOK, at(0))
	return s
}

func TestGateDecisions(t *testing.T) {
	tests := []struct {
		name    string
		session func() *Session
		now     float64
		w       Write
		forward bool
	}{
		{"no state", func() *Session { return &Session{} }, 0, Write{}, true},
		{"repeat idle within window", trusted, 54, Write{}, false},
		{"repeat idle at the window", trusted, 55, Write{}, false},
		{"repeat idle past the window", trusted, 55.001, Write{}, true},
		{"first active after idle writes", trusted, 10, Write{Active: true}, true},
		{"first input", trusted, 10, Write{Input: true}, true},
		{"trust lapsed", func() *Session {
			s := trusted()
			tk := s.Reserve(at(30), Write{}, window)
			s.Settle(tk, OutcomeFailed, at(30)) // rolled back: last write stays at 0
			return s
		}, 56, Write{}, true},
		{"active repeat within window", func() *Session {
			s := trusted()
			tk := s.Reserve(at(10), Write{Active: true, Input: true}, window)
			s.Settle(tk, OutcomeOK, at(10))
			return s
		}, 40, Write{Active: true, Input: true}, false},
		{"denied forgets everything", func() *Session {
			s := trusted()
			tk := s.Reserve(at(10), Write{}, window)
			s.Settle(tk, OutcomeDenied, at(10))
			return s
		}, 11, Write{}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.session()
			tk, forward, err := s.Admit(context.Background(), clockAt(tc.now), tc.w, window)
			if err != nil {
				t.Fatal(err)
			}
			if forward != tc.forward {
				t.Fatalf("forward = %v, want %v", forward, tc.forward)
			}
			if forward {
				s.Settle(tk, OutcomeOK, at(tc.now))
			}
		})
	}
}

// TestPollWithinWindowKeepsWriteTime: a poll forwarded 20 s after a write
// is a no-op on the server, so it must not move the time the next write is
// due; otherwise a ping 56 s after the real write would be answered
// locally while Zulip would have written.
func TestPollWithinWindowKeepsWriteTime(t *testing.T) {
	s := trusted()
	tk := s.Reserve(at(20), Write{}, window)
	s.Settle(tk, OutcomeOK, at(20))
	if _, forward, _ := s.Admit(context.Background(), clockAt(56), Write{}, window); !forward {
		t.Fatal("the write due at 56 s was answered locally")
	}
}

func TestRollbackKeepsLaterReservations(t *testing.T) {
	s := trusted()
	first := s.Reserve(at(60), Write{Active: true}, window)
	s.Settle(first, OutcomeFailed, at(60))
	second := s.Reserve(at(61), Write{Active: true}, window)
	third := s.Reserve(at(62), Write{Input: true}, window)
	s.Settle(third, OutcomeFailed, at(62))
	s.Settle(second, OutcomeOK, at(62))
	if _, forward, _ := s.Admit(context.Background(), clockAt(100), Write{Active: true}, window); forward {
		t.Fatal("the confirmed write at 61 was rolled back by a later failure")
	}
	if _, forward, _ := s.Admit(context.Background(), clockAt(100), Write{Input: true}, window); !forward {
		t.Fatal("the failed input write was not rolled back")
	}
}

// TestAdmitWaitsForInflight: a ping arriving while a write of its session
// is in flight is not answered locally until that write is confirmed, and
// concurrent pings never forward the same write twice.
func TestAdmitWaitsForInflight(t *testing.T) {
	s := trusted()
	tk := s.Reserve(at(60), Write{}, window)
	var wg sync.WaitGroup
	var mu sync.Mutex
	forwards := 0
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tk, forward, err := s.Admit(context.Background(), clockAt(61), Write{}, window)
			if err != nil {
				t.Error(err)
				return
			}
			if forward {
				mu.Lock()
				forwards++
				mu.Unlock()
				s.Settle(tk, OutcomeOK, at(61))
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // let them block on the in-flight write
	s.Settle(tk, OutcomeFailed, at(61))
	wg.Wait()
	if forwards != 1 {
		t.Fatalf("%d pings forwarded after the in-flight write failed, want exactly 1", forwards)
	}
}

func TestAdmitGivesUpWithTheClient(t *testing.T) {
	s := trusted()
	s.Reserve(at(60), Write{}, window)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := s.Admit(ctx, clockAt(61), Write{}, window); err == nil {
		t.Fatal("Admit did not return when the request was cancelled")
	}
}

func TestTrusted(t *testing.T) {
	s := trusted()
	if !s.Trusted(at(55), window) || s.Trusted(at(55.001), window) {
		t.Fatal("trust must last exactly the window after the last 2xx")
	}
	if (&Session{}).Trusted(at(0), window) {
		t.Fatal("a new session is trusted")
	}
}
