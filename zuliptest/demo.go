package zuliptest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// DemoEmail is the email of user 1 of a demo realm, King Hamlet.
const DemoEmail = "hamlet@zulip.example"

// DemoAPIKey is the API key of DemoEmail in a demo realm, fixed so that
// documentation can show a working request, for example
//
//	curl -u hamlet@zulip.example:hamletdemoapikey0000000000000000 \
//	    -d status=active http://localhost:8080/api/v1/users/me/presence
const DemoAPIKey = "hamletdemoapikey0000000000000000"

// Defaults of DemoConfig and of the zulip_sim handler.
const (
	DefaultDemoUsers  = 200
	DefaultDemoOnline = 40
	DefaultDemoSeed   = 1
)

// Timing of the simulated clients, in realm time.
const (
	demoPingPeriod  = 60 * time.Second
	demoPingJitter  = 5 * time.Second
	demoChurnPeriod = 30 * time.Second
	demoActiveShare = 0.8 // pings that say "active" rather than "idle"
)

// DemoConfig describes a demo realm. Zero values select the defaults.
type DemoConfig struct {
	// Users is the number of human users (default 200).
	Users int
	// Online is the number of users whose clients keep pinging (default
	// 40, at most Users).
	Online int
	// Seed makes the realm and its activity repeatable (default 1).
	Seed int64
	// Now is the server's clock (default time.Now).
	Now func() time.Time
}

func (cfg DemoConfig) withDefaults() DemoConfig {
	if cfg.Users <= 0 {
		cfg.Users = DefaultDemoUsers
	}
	if cfg.Online <= 0 {
		cfg.Online = DefaultDemoOnline
	}
	cfg.Online = min(cfg.Online, cfg.Users)
	if cfg.Seed == 0 {
		cfg.Seed = DefaultDemoSeed
	}
	return cfg
}

// demoNames are the first users of a demo realm, after Zulip's
// development fixtures; later users are userN@zulip.example.
var demoNames = []struct {
	name, fullName string
	role           Role
}{
	{"hamlet", "King Hamlet", RoleMember},
	{"iago", "Iago", RoleMember},
	{"othello", "Othello, the Moor of Venice", RoleMember},
	{"cordelia", "Cordelia, Lear's daughter", RoleMember},
	{"prospero", "Prospero from The Tempest", RoleMember},
	{"polonius", "Polonius", RoleGuest},
	{"aaron", "aaron", RoleMember},
	{"desdemona", "Desdemona", RoleMember},
	{"zoe", "ZOE", RoleMember},
	{"ophelia", "Ophelia", RoleMember},
	{"horatio", "Horatio", RoleMember},
	{"portia", "Portia", RoleMember},
	{"rosalind", "Rosalind", RoleMember},
	{"viola", "Viola", RoleMember},
	{"miranda", "Miranda", RoleMember},
	{"lear", "King Lear", RoleMember},
}

// demo is the background activity of a demo realm: the online users'
// clients, each pinging about once a minute, and now and then one client
// going away while another user comes online.
type demo struct {
	mu        sync.Mutex
	rm        *Realm
	rng       *rand.Rand
	online    []*demoClient
	nextChurn time.Time
	tick      time.Duration // wall-clock period of RunActivity
}

type demoClient struct {
	u    *user
	next time.Time
}

// NewDemo returns a server whose default realm is a demo realm: Users
// users (hamlet first, with DemoAPIKey), about three quarters of them seen
// in the last 14 days and a few long ago, and Online of them online. It is
// deterministic for a given seed and clock. The activity only runs once
// RunActivity is called; the counters start at zero.
func NewDemo(cfg DemoConfig) *Server {
	cfg = cfg.withDefaults()
	s := New(cfg.Now)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rng = rand.New(rand.NewPCG(uint64(cfg.Seed), 0x6b657973))
	d := &demo{rm: s.def, rng: rand.New(rand.NewPCG(uint64(cfg.Seed), 0x64656d6f)), tick: time.Second}
	d.populateLocked(cfg)
	s.demo = d
	s.def.stats = Stats{Requests: map[string]int64{}}
	return s
}

func (d *demo) populateLocked(cfg DemoConfig) {
	rm := d.rm
	now := rm.nowLocked()
	users := make([]*user, cfg.Users)
	for i := range users {
		users[i] = d.addUserLocked(i, now)
	}
	rm.s.setKeyLocked(users[0], DemoAPIKey)

	// Rows are written in a random order so update IDs are spread out.
	perm := d.rng.Perm(len(users))
	recentShare := min(0.95, max(0, (0.75*float64(cfg.Users)-float64(cfg.Online))/float64(max(1, cfg.Users-cfg.Online))))
	for i, idx := range perm {
		u := users[idx]
		if i < cfg.Online {
			d.seedOnlineLocked(u, now)
			continue
		}
		switch x := d.rng.Float64(); {
		case x < recentShare:
			d.seedOfflineLocked(u, now, 3*time.Minute, 14*24*time.Hour)
		case x < recentShare+0.05:
			d.seedOfflineLocked(u, now, 15*24*time.Hour, 75*24*time.Hour)
		}
	}
	d.nextChurn = now.Add(demoChurnPeriod)
}

func (d *demo) addUserLocked(i int, now time.Time) *user {
	name, fullName, role := fmt.Sprintf("user%d", i+1), fmt.Sprintf("User %d", i+1), RoleMember
	if i < len(demoNames) {
		name, fullName, role = demoNames[i].name, demoNames[i].fullName, demoNames[i].role
	}
	u, err := d.rm.addUserLocked(name+"@zulip.example", fullName, role)
	if err != nil {
		panic("zuliptest: " + err.Error())
	}
	u.dateJoined = dbTime(now.Add(-d.between(80*24*time.Hour, 400*24*time.Hour)))
	return u
}

// between returns a random duration in [lo, hi).
func (d *demo) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(d.rng.Int64N(int64(hi-lo)))
}

func (d *demo) seedOnlineLocked(u *user, now time.Time) {
	connected := now.Add(-d.between(0, 50*time.Second))
	active := connected
	if d.rng.Float64() >= demoActiveShare {
		active = connected.Add(-d.between(2*time.Minute, 10*time.Minute))
	}
	d.setRowLocked(u, connected, active)
	d.online = append(d.online, &demoClient{u: u, next: now.Add(d.between(0, demoPingPeriod))})
}

func (d *demo) seedOfflineLocked(u *user, now time.Time, minAge, maxAge time.Duration) {
	connected := now.Add(-d.between(minAge, maxAge))
	var active time.Time
	if d.rng.Float64() < 0.85 {
		active = connected.Add(-d.between(0, 3*time.Hour))
	}
	d.setRowLocked(u, connected, active)
}

func (d *demo) setRowLocked(u *user, connected, active time.Time) {
	row := &presenceRow{connected: dbTime(connected), active: dbTimeOrNull(active)}
	d.rm.rows[u.ID] = row
	d.rm.bumpLocked(u.ID, row)
}

// RunActivity runs the background activity of a demo server (see NewDemo)
// until ctx is done: online users' clients ping every 60 s with a few
// seconds of jitter, mostly "active" and sometimes "idle", through the
// same write path as API requests, and every half minute or so a client
// may go away while another user comes online. On a server not made by
// NewDemo it returns at once.
func (s *Server) RunActivity(ctx context.Context) {
	d := s.demo
	if d == nil {
		return
	}
	ticker := time.NewTicker(d.tick)
	defer ticker.Stop()
	for {
		d.step(d.rm.Now())
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// step runs what is due at realm time now.
func (d *demo) step(now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.rm.s
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, cl := range d.online {
		if cl.next.After(now) {
			continue
		}
		cl.next = now.Add(demoPingPeriod + d.between(-demoPingJitter, demoPingJitter))
		if cl.u.active && cl.u.presenceEnabled {
			d.rm.writePresenceLocked(cl.u, d.rng.Float64() < demoActiveShare, dbTime(now))
		}
	}
	if now.Before(d.nextChurn) {
		return
	}
	d.nextChurn = now.Add(d.between(demoChurnPeriod/2, demoChurnPeriod*3/2))
	if d.rng.IntN(2) == 0 {
		d.churnLocked(now)
	}
}

// churnLocked replaces a random online client by a random offline user.
func (d *demo) churnLocked(now time.Time) {
	online := map[int64]bool{}
	for _, cl := range d.online {
		online[cl.u.ID] = true
	}
	var offline []*user
	for _, u := range d.rm.users {
		if !online[u.ID] && u.active && u.Role != RoleBot {
			offline = append(offline, u)
		}
	}
	if len(d.online) == 0 || len(offline) == 0 {
		return
	}
	i := d.rng.IntN(len(d.online))
	d.online[i] = &demoClient{u: offline[d.rng.IntN(len(offline))], next: now}
}
