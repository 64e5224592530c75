package simclock

import (
	"sync"
	"testing"
	"time"
)

// TestClock checks that the clock keeps the start's sub-second part and
// location exactly, so that times it gives compare equal with == to the
// ones a test computes from the start.
func TestClock(t *testing.T) {
	start := time.Date(2026, 11, 2, 9, 0, 0, 500_000_000, time.UTC)
	c := New(start)
	if got := c.Now(); got != start {
		t.Fatalf("Now = %v, want %v", got, start)
	}
	c.Advance(90 * time.Second)
	if got, want := c.Now(), start.Add(90*time.Second); got != want {
		t.Fatalf("after Advance: %v, want %v", got, want)
	}
	c.Set(start.Add(-5 * time.Second))
	if got, want := c.Now(), start.Add(-5*time.Second); got != want {
		t.Fatalf("after Set: %v, want %v", got, want)
	}
}

// TestClockConcurrent advances the clock from several goroutines while
// others read it; run with -race, it shows the clock needs no lock.
func TestClockConcurrent(t *testing.T) {
	start := time.Date(2022, 7, 4, 18, 15, 39, 628715500, time.UTC)
	c := New(start)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 1000 {
				c.Advance(time.Millisecond)
				_ = c.Now()
			}
		})
	}
	wg.Wait()
	if got, want := c.Now(), start.Add(4*time.Second); got != want {
		t.Fatalf("Now = %v, want %v", got, want)
	}
}
