package cache

import (
	"context"
	"sync"
)

// Flight lets one of several concurrent requests do a piece of work (an
// upstream read) while the others wait for it and then use its result, so
// that a burst of requests costs the server one read, not one per request.
// The zero value is ready to use.
type Flight struct {
	mu   sync.Mutex
	done chan struct{}
}

// Begin reports whether the caller leads: it must do the work and then call
// End, on every path (a deferred call, so that a panic releases the others
// too). Otherwise it returns a channel closed when the leader is done.
func (f *Flight) Begin() (lead bool, wait <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done != nil {
		return false, f.done
	}
	f.done = make(chan struct{})
	return true, nil
}

// Lead is Begin for a caller that waits when it does not lead: it returns
// true when the caller leads (and must End), or false once the leader is
// done or ctx is, whichever comes first.
func (f *Flight) Lead(ctx context.Context) bool {
	lead, wait := f.Begin()
	if !lead {
		select {
		case <-wait:
		case <-ctx.Done():
		}
	}
	return lead
}

// End releases the requests waiting for the leader.
func (f *Flight) End() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.done != nil {
		close(f.done)
		f.done = nil
	}
}
