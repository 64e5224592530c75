package cache

import (
	"testing"
	"time"
)

// TestRatePolicy: the proxy spends one of a user's requests only on what
// Zulip reported (design §7.6): never before a report, never at or below
// the reserve (less what it spent since the report), never beyond what
// it saved the user in the window plus the credit, never more than the
// ring holds; a server without a limit bounds nothing.
func TestRatePolicy(t *testing.T) {
	p := DefaultRatePolicy
	t.Run("no report", func(t *testing.T) {
		var r RowMirror
		if r.SpendRequest(t0, p) || r.RateKnown(t0) {
			t.Fatal("spent before Zulip reported the limit")
		}
	})
	t.Run("credit", func(t *testing.T) {
		var r RowMirror
		r.ObserveRate(150, t0)
		for i := range p.Credit {
			if !r.SpendRequest(t0.Add(time.Duration(i)*time.Second), p) {
				t.Fatalf("spending %d of the credit of %d refused", i+1, p.Credit)
			}
		}
		if r.SpendRequest(t0.Add(5*time.Second), p) {
			t.Fatal("spent past the credit with nothing saved")
		}
		r.SavedRequest(t0.Add(6 * time.Second))
		if !r.SpendRequest(t0.Add(7*time.Second), p) {
			t.Fatal("a saved request did not pay for one spent")
		}
		if r.SpendRequest(t0.Add(8*time.Second), p) {
			t.Fatal("one saved request paid for two")
		}
		// A window after the first two spendings, they no longer count.
		if !r.SpendRequest(t0.Add(RateWindow+time.Second), p) {
			t.Fatal("spendings out of the window still counted")
		}
	})
	t.Run("ring", func(t *testing.T) {
		var r RowMirror
		r.ObserveRate(190, t0)
		for i := range 10 {
			r.SavedRequest(t0.Add(time.Duration(i) * time.Millisecond))
		}
		n := 0
		for i := range 10 {
			if r.SpendRequest(t0.Add(time.Second+time.Duration(i)*time.Millisecond), p) {
				n++
			}
		}
		if n != rateRing {
			t.Fatalf("spent %d in one window, want at most the ring's %d", n, rateRing)
		}
	})
	t.Run("reserve", func(t *testing.T) {
		var r RowMirror
		for i := range 4 {
			r.SavedRequest(t0.Add(time.Duration(i) * time.Millisecond))
		}
		r.ObserveRate(p.Reserve+2, t0.Add(time.Second))
		if !r.SpendRequest(t0.Add(2*time.Second), p) {
			t.Fatal("refused with more than the reserve left")
		}
		// Reserve+2 reported, one spent since: Reserve+1 left.
		if !r.SpendRequest(t0.Add(3*time.Second), p) {
			t.Fatal("refused with more than the reserve left, less what was spent")
		}
		if r.SpendRequest(t0.Add(4*time.Second), p) {
			t.Fatal("spent at the reserve: the report less what was spent since")
		}
		r.ObserveRate(p.Reserve, t0.Add(5*time.Second))
		if r.SpendRequest(t0.Add(6*time.Second), p) {
			t.Fatal("spent with only the reserve reported left")
		}
		// A report older than the last one changes nothing.
		r.ObserveRate(190, t0.Add(4*time.Second))
		if r.SpendRequest(t0.Add(7*time.Second), p) {
			t.Fatal("an older report replaced a newer one")
		}
	})
	t.Run("stale report", func(t *testing.T) {
		// A report older than the window is no longer "known", but it
		// still bounds what is left from below.
		var r RowMirror
		r.ObserveRate(p.Reserve, t0)
		late := t0.Add(2 * RateWindow)
		if r.RateKnown(late) {
			t.Fatal("a report older than the window counted as known")
		}
		if r.SpendRequest(late, p) {
			t.Fatal("a stale report at the reserve let the proxy spend")
		}
	})
	t.Run("unlimited", func(t *testing.T) {
		var r RowMirror
		r.ObserveRate(Unlimited, t0)
		for i := range 10 {
			if !r.SpendRequest(t0.Add(time.Duration(i)*time.Millisecond), p) {
				t.Fatal("refused on a server that enforces no limit")
			}
		}
	})
}
