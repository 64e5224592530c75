package twinrig

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// TestRowsFollowTheClock adds a user to both sides, writes one side's row
// on the rig's clock and checks that the rows then differ, and agree again
// once the other side has the same write.
func TestRowsFollowTheClock(t *testing.T) {
	r := New()
	d, p, err := r.AddUser("hamlet@zulip.example", "hamlet", zuliptest.RoleMember)
	if err != nil || d.ID != p.ID {
		t.Fatalf("AddUser: %v, ids %d and %d", err, d.ID, p.ID)
	}
	if dr, pr := r.Rows(d.ID); !SameRow(dr, pr) {
		t.Fatalf("fresh rows differ: %+v, %+v", dr, pr)
	}
	r.Clock.Advance(time.Minute)
	now := r.Clock.Now()
	r.Direct.DefaultRealm().SetPresenceRow(d.ID, now, now)
	if dr, pr := r.Rows(d.ID); SameRow(dr, pr) {
		t.Fatalf("a write on one side went unseen: %+v, %+v", dr, pr)
	}
	r.Proxied.DefaultRealm().SetPresenceRow(d.ID, now, now)
	if dr, pr := r.Rows(d.ID); !SameRow(dr, pr) {
		t.Fatalf("rows differ after the same write: %+v, %+v", dr, pr)
	}
}

// fake is a handler that records what the rig did to it.
type fake struct {
	invalid     bool
	provisioned bool
	cleanedUp   bool
	now         func() time.Time
}

func (f *fake) Provision(caddy.Context) error {
	f.provisioned = true
	return nil
}

func (f *fake) Validate() error {
	if f.invalid {
		return errors.New("invalid")
	}
	return nil
}

func (f *fake) Cleanup() error {
	f.cleanedUp = true
	return nil
}

func (f *fake) SetClock(now func() time.Time) { f.now = now }

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	return next.ServeHTTP(w, r)
}

// TestProvision checks the handler's lifecycle: on the rig's clock once
// provisioned, cleaned up on release, and cleaned up at once when it
// fails validation, as Caddy would.
func TestProvision(t *testing.T) {
	r := New()
	h := &fake{}
	_, release, err := r.Provision(h)
	if err != nil || !h.provisioned || h.now == nil || !h.now().Equal(r.Clock.Now()) {
		t.Fatalf("Provision: %v, %+v", err, h)
	}
	if err := release(); err != nil || !h.cleanedUp {
		t.Fatalf("release: %v, cleaned up %v", err, h.cleanedUp)
	}
	bad := &fake{invalid: true}
	if _, _, err := r.Provision(bad); err == nil || !bad.cleanedUp || bad.now != nil {
		t.Fatalf("invalid handler: %v, %+v", err, bad)
	}
}
