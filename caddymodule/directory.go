package caddymodule

import (
	"fmt"
	"net/http"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// roleGuest is Zulip's UserProfile.ROLE_GUEST.
const roleGuest = 600

// directory returns the host's user list, fetched with the client's own
// credentials when missing, stale, or lacking a user the rows name. One
// request of a burst fetches; the others wait for it. It returns nil when
// some row still cannot be named, or only a guest asks and no complete
// list is fresh (a guest's list names nobody else, see cache.Directory),
// so the caller can fall back to the server's own answer.
func (c *call) directory(rows []presence.Row) *cache.Directory {
	now := c.h.now()
	dir := c.h.store.Directory(c.host, now)
	if c.usable(dir, rows, now) {
		return dir
	}
	if dir != nil && dir.CheckedGuest(c.guestID(dir), now, time.Duration(c.h.UsersRefresh)) {
		return nil // the guest's own list could tell nothing more
	}
	host := c.hostFor()
	if !host.Members.Lead(c.r.Context()) {
		now = c.h.now() // after waiting for the request that led
		if dir = c.h.store.Directory(c.host, now); c.usable(dir, rows, now) {
			return dir
		}
		return nil
	}
	defer host.Members.End()
	if fresh := c.h.store.Directory(c.host, now); fresh != dir && c.usable(fresh, rows, now) {
		return fresh // fetched by a request that led before this one
	}
	members, err := c.fetchMembers()
	if err != nil {
		c.debug("fetching the user list failed: " + err.Error())
		return nil
	}
	dir = dir.Merged(members, now, c.listIsComplete(members), c.requesterID())
	c.h.store.PutDirectory(c.host, dir, now)
	if !c.usable(dir, rows, now) {
		return nil
	}
	return dir
}

// usable reports whether dir may name rows for this request: a complete
// list fetched within users_refresh that names every row and does not
// call the requester deactivated.
func (c *call) usable(dir *cache.Directory, rows []presence.Row, now time.Time) bool {
	return dir != nil && dir.Fresh(now, time.Duration(c.h.UsersRefresh)) && names(dir, rows) && c.selfActive(dir)
}

// guestID returns the requester's user id if the directory names the
// requester as a guest, else 0.
func (c *call) guestID(dir *cache.Directory) int64 {
	id := c.requesterID()
	if m, ok := dir.Members[id]; ok && m.Guest {
		return id
	}
	return 0
}

// requesterID returns the requester's user id, or 0 while it is not known.
func (c *call) requesterID() int64 {
	if c.row == nil {
		return 0
	}
	return c.row.UserID()
}

// selfActive reports whether the directory does not call the requester
// deactivated: the server just accepted the requester, so a list that
// does is stale.
func (c *call) selfActive(dir *cache.Directory) bool {
	if c.row == nil {
		return true
	}
	m, ok := dir.Members[c.row.UserID()]
	return !ok || m.Active
}

// listIsComplete reports whether the requester of a user list sees every
// user: it names the requester, who is no guest. The requester's id comes
// from its row mirror, or else from GET /users/me once.
func (c *call) listIsComplete(members map[int64]cache.Member) bool {
	row := c.bindUserRow()
	if row == nil || c.knowUserID(row) != nil {
		return false
	}
	m, ok := members[row.UserID()]
	return ok && !m.Guest
}

func names(dir *cache.Directory, rows []presence.Row) bool {
	for _, row := range rows {
		if _, ok := dir.Members[row.UserID]; !ok {
			return false
		}
	}
	return true
}

// usersAnswer is the part of Zulip's GET /users answer a legacy answer needs.
type usersAnswer struct {
	Result  string `json:"result"`
	Members []struct {
		UserID   int64  `json:"user_id"`
		Email    string `json:"email"`
		IsActive bool   `json:"is_active"`
		IsBot    bool   `json:"is_bot"`
		Role     int    `json:"role"`
	} `json:"members"`
}

// fetchMembers asks the server for the realm's users, as the client.
func (c *call) fetchMembers() (map[int64]cache.Member, error) {
	var ans usersAnswer
	status, err := c.getJSON(c.prefix()+"/users", "", "users", &ans)
	switch {
	case err != nil:
		return nil, err
	case status != http.StatusOK || ans.Result != "success":
		return nil, fmt.Errorf("status %d, result %q", status, ans.Result)
	}
	members := make(map[int64]cache.Member, len(ans.Members))
	for _, m := range ans.Members {
		members[m.UserID] = cache.Member{Email: m.Email, Active: m.IsActive, Bot: m.IsBot, Guest: m.Role == roleGuest}
	}
	return members, nil
}
