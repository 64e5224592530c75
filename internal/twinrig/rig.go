// Package twinrig is the twin rig that the caddymodule tests and the
// benchmark (package bench) both measure the zulip_presence handler on:
// two identical simulated Zulip servers on one virtual clock, one
// answering clients directly and the other through the handler. Whatever
// is done to one is done to the other, so their answers and their
// presence rows can be compared (design §6).
//
// It holds what the two harnesses do alike; how they drive requests (the
// tests one at a time, the benchmark on locked OS threads with CPU
// accounting) stays with each.
package twinrig

import (
	"fmt"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest/simclock"
)

// Start is where the rig's clock starts. Its half-second fraction keeps
// Zulip's sub-second comparisons and the proxy's whole-second ones in
// agreement: design §6 lets them differ only within one second of a
// threshold, which a whole-second start would sit on.
var Start = time.Date(2026, 11, 2, 9, 0, 0, 500_000_000, time.UTC)

// Rig is the two servers and their shared clock. Direct answers clients
// straight; Proxied is the one the handler forwards to.
type Rig struct {
	Clock   *simclock.Clock
	Direct  *zuliptest.Server
	Proxied *zuliptest.Server
}

// New returns a rig of two empty servers on a clock standing at Start.
func New() *Rig {
	clk := simclock.New(Start)
	return &Rig{Clock: clk, Direct: zuliptest.New(clk.Now), Proxied: zuliptest.New(clk.Now)}
}

// Both applies an operation to the default realm of each server.
func (r *Rig) Both(op func(*zuliptest.Realm)) {
	op(r.Direct.DefaultRealm())
	op(r.Proxied.DefaultRealm())
}

// AddUser creates a user alike on both servers. The sides are compared by
// user id, so it fails if the servers gave the user different ids: the
// twins have diverged.
func (r *Rig) AddUser(email, name string, role zuliptest.Role) (direct, proxied zuliptest.User, err error) {
	direct = r.Direct.DefaultRealm().AddUser(email, name, role)
	proxied = r.Proxied.DefaultRealm().AddUser(email, name, role)
	if direct.ID != proxied.ID {
		err = fmt.Errorf("twins diverged: user ids %d and %d", direct.ID, proxied.ID)
	}
	return direct, proxied, err
}

// Rows returns a user's presence row on each server.
func (r *Rig) Rows(id int64) (direct, proxied zuliptest.Row) {
	return r.Direct.DefaultRealm().PresenceRow(id), r.Proxied.DefaultRealm().PresenceRow(id)
}

// SameRow reports whether two presence rows agree on whether they exist
// and on their times: what a write lost (or added) on the way through the
// handler changes. Update ids are not compared; the rig's users have
// always been judged by their times alone.
func SameRow(d, p zuliptest.Row) bool {
	return d.Exists == p.Exists && d.LastConnected.Equal(p.LastConnected) && d.LastActive.Equal(p.LastActive)
}

// SetServerSettings gives both servers the same Zulip version and
// settings.
func (r *Rig) SetServerSettings(st zuliptest.ServerSettings) {
	r.Direct.SetServerSettings(st)
	r.Proxied.SetServerSettings(st)
}

// RunZulip makes both servers the Zulip of feature level level, with
// Zulip's default settings.
func (r *Rig) RunZulip(level int) {
	st := zuliptest.DefaultServerSettings()
	st.FeatureLevel = level
	r.SetServerSettings(st)
}
