package cache

import (
	"maps"
	"time"
)

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
//
// Only a list fetched by a user who is no guest names other users: for a
// guest whose access the realm limits (can_access_all_users_group),
// Zulip lists every user it cannot access as a made-up entry ("Unknown
// user", a fake email, an active member; zerver/lib/users.py
// get_data_for_inaccessible_user), while presence answers name the same
// users by their real API email. Such a list would name other clients'
// rows wrongly, show deactivated users as active and guests as members.
// From a guest's list only the guest's own entry is taken, which is
// always real: it tells that the requester is a guest.
type Directory struct {
	stored lease // the store's
	// Members maps user id to member.
	Members map[int64]Member
	// FetchedAt is when a complete list, one fetched by a user who is no
	// guest, was last fetched.
	FetchedAt time.Time
	// GuestChecks tells, by guest user id, when that guest's own entry
	// was last taken from its own list.
	GuestChecks map[int64]time.Time
}

// Merged returns the directory updated by a list fetched at at by user
// by. A complete list replaces d. Of a guest's list, only by's own entry
// is taken; every other member stays as d has it.
func (d *Directory) Merged(fetched map[int64]Member, at time.Time, complete bool, by int64) *Directory {
	if complete {
		return &Directory{Members: fetched, FetchedAt: at}
	}
	out := &Directory{Members: map[int64]Member{}, GuestChecks: map[int64]time.Time{}}
	if d != nil {
		maps.Copy(out.Members, d.Members)
		maps.Copy(out.GuestChecks, d.GuestChecks)
		out.FetchedAt = d.FetchedAt
	}
	if self, ok := fetched[by]; ok && by != 0 {
		out.Members[by] = self
		out.GuestChecks[by] = at
	}
	return out
}

// Fresh reports whether the directory may name rows at now without a new
// fetch: a complete list was fetched within refresh.
func (d *Directory) Fresh(now time.Time, refresh time.Duration) bool {
	return !d.FetchedAt.IsZero() && now.Sub(d.FetchedAt) < refresh
}

// CheckedGuest reports whether guest's own list was taken within refresh:
// fetching it again could not make the directory fresh.
func (d *Directory) CheckedGuest(guest int64, now time.Time, refresh time.Duration) bool {
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
