// Package simclock is the virtual clock that drives simulated Zulip
// servers (zuliptest.New takes its Now) and whatever is compared against
// them: time moves only when a test or benchmark says so, so a run is
// deterministic and an hour of presence traffic takes no hour.
//
// It lives beside zuliptest rather than in it so that zuliptest's API
// stays a plain func() time.Time, and outside internal/ so that anyone
// driving zuliptest can use it.
package simclock

import (
	"sync/atomic"
	"time"
)

// Clock is a manual clock, safe for concurrent use: the benchmark's two
// sides and their handlers read it from several goroutines at once, so it
// is a single atomic count of nanoseconds rather than a locked time.Time.
// Its times are in UTC and carry no monotonic reading, as times read back
// from a database would.
type Clock struct{ ns atomic.Int64 }

// New returns a clock standing at start.
func New(start time.Time) *Clock {
	c := &Clock{}
	c.Set(start)
	return c
}

// Now returns the virtual time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

// Advance moves the virtual time by d (back, if d is negative).
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// Set moves the virtual time to t, for tests that jump around a fixed
// instant rather than step forward.
func (c *Clock) Set(t time.Time) { c.ns.Store(t.UnixNano()) }
