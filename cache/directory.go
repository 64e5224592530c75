package cache

import "time"

// Member is what a legacy answer needs to know of a user.
type Member struct {
	// Email is the user's API email, the key of legacy answers.
	Email string
	// Active is false for deactivated users, whom Zulip leaves out.
	Active bool
	// Bot is true for bots, whom Zulip leaves out too.
	Bot bool
	// Guest is true for guests, whose view of the realm the server may
	// restrict.
	Guest bool
}

// Directory is a realm's user list as clients' GET /users returned it.
// It is immutable once stored, so readers need no lock.
type Directory struct {
	// Members maps user id to member.
	Members map[int64]Member
	// FetchedAt is when a complete list, one fetched by a user who is no
	// guest, was last fetched.
	FetchedAt time.Time
	// GuestChecks tells, by guest user id, when that guest's own list
	// was last merged since the last complete one.
	GuestChecks map[int64]time.Time
}

// Merged returns the directory updated by a list fetched at at by user
// by. A complete list replaces d. A guest's list names only the users the
// guest can see, so it updates the members it names, keeps the others,
// and makes the directory fresh for that guest alone: a user it leaves
// out, whom another guest may see, may have changed since.
func (d *Directory) Merged(fetched map[int64]Member, at time.Time, complete bool, by int64) *Directory {
	if complete {
		return &Directory{Members: fetched, FetchedAt: at}
	}
	out := &Directory{Members: make(map[int64]Member, len(fetched)), GuestChecks: map[int64]time.Time{}}
	if d != nil {
		for id, m := range d.Members {
			out.Members[id] = m
		}
		for id, t := range d.GuestChecks {
			out.GuestChecks[id] = t
		}
		out.FetchedAt = d.FetchedAt
	}
	for id, m := range fetched {
		out.Members[id] = m
	}
	if by != 0 {
		out.GuestChecks[by] = at
	}
	return out
}

// Fresh reports whether the directory may name a requester's rows at now
// without a new fetch: a complete list fetched within refresh, or for a
// guest (guest is the guest's user id, 0 for anyone else), whose own
// fetch could not make it complete, that guest's own list fetched within
// refresh.
func (d *Directory) Fresh(now time.Time, refresh time.Duration, guest int64) bool {
	if now.Sub(d.FetchedAt) < refresh {
		return true
	}
	checked, ok := d.GuestChecks[guest]
	return guest != 0 && ok && now.Sub(checked) < refresh
}

// cost estimates the directory's memory in bytes: the map's buckets and
// each member's email, with ristretto's entry (see TestCostsMatchHeap).
func (d *Directory) cost() int64 {
	c := int64(512)
	for _, m := range d.Members {
		c += 80 + int64(len(m.Email))
	}
	return c + int64(len(d.GuestChecks))*48
}
