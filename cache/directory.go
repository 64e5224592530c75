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
}

// Directory is a realm's user list as some client's GET /users returned it.
// It is immutable once stored, so readers need no lock.
type Directory struct {
	// Members maps user id to member.
	Members map[int64]Member
	// FetchedAt is when the list was fetched.
	FetchedAt time.Time
}

// Merged returns a new directory holding d's members updated by fresh ones.
// A guest's list names only the users the guest can see, so a fetch never
// drops members another client's fetch contributed.
func (d *Directory) Merged(fresh map[int64]Member, at time.Time) *Directory {
	out := &Directory{Members: make(map[int64]Member, len(fresh)), FetchedAt: at}
	if d != nil {
		for id, m := range d.Members {
			out.Members[id] = m
		}
	}
	for id, m := range fresh {
		out.Members[id] = m
	}
	return out
}

// cost estimates the directory's memory in bytes.
func (d *Directory) cost() int64 {
	c := int64(64)
	for _, m := range d.Members {
		c += 48 + int64(len(m.Email))
	}
	return c
}
