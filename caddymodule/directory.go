package caddymodule

import (
	"fmt"
	"net/http"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// directory returns the host's user list, fetched with the client's own
// credentials when missing, stale, or lacking a user the rows name. It
// returns nil when some row still cannot be named, so the caller can fall
// back to the server's own answer.
func (c *call) directory(host string, rows []presence.Row) *cache.Directory {
	now := c.h.now()
	dir := c.h.store.Directory(host)
	fresh := dir != nil && now.Sub(dir.FetchedAt) < time.Duration(c.h.UsersRefresh)
	if fresh && names(dir, rows) {
		return dir
	}
	members, err := c.fetchMembers()
	if err != nil {
		c.debug("fetching the user list failed: " + err.Error())
		return nil
	}
	dir = dir.Merged(members, now)
	c.h.store.PutDirectory(host, dir)
	if !names(dir, rows) {
		return nil
	}
	return dir
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
		members[m.UserID] = cache.Member{Email: m.Email, Active: m.IsActive, Bot: m.IsBot}
	}
	return members, nil
}
