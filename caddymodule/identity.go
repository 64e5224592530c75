package caddymodule

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
)

// user finds whose presence row the session writes. On /api the Basic
// credentials name the user's email; on /json the session cookie names
// nobody the proxy can see, so the server is asked once per session
// (GET /json/users/me, with the client's own cookies).
// It also returns the user's id when the server told it (0 otherwise).
func (c *call) user() (cache.UserKey, *ownProfile, error) {
	if c.family == cache.FamilyAPI {
		email, err := basicEmail(c.r.Header.Get("Authorization"))
		return c.h.store.UserKey(hostOf(c.r), email), nil, err
	}
	p, err := c.fetchOwnProfile()
	if err != nil {
		return "", nil, err
	}
	return c.h.store.UserKey(hostOf(c.r), p.email()), p, nil
}

// basicEmail is the user part of HTTP Basic credentials, as Zulip reads
// them (zerver/lib/rest.py): scheme case-insensitive, email before the
// first colon.
func basicEmail(auth string) (string, error) {
	scheme, encoded, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "basic") {
		return "", fmt.Errorf("not basic authentication")
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(encoded))
	if err != nil {
		return "", err
	}
	email, _, ok := strings.Cut(string(raw), ":")
	if !ok || email == "" {
		return "", fmt.Errorf("no email in basic credentials")
	}
	return email, nil
}

// ownProfile is the part of GET /users/me that names the user. Zulip's
// Basic authentication takes the delivery email, which the user's own
// profile carries; the API email is the fallback where it is the same.
type ownProfile struct {
	Result        string    `json:"result"`
	UserID        int64     `json:"user_id"`
	Email         string    `json:"email"`
	DeliveryEmail string    `json:"delivery_email"`
	DateJoined    time.Time `json:"date_joined"`
}

func (p *ownProfile) email() string {
	if p.DeliveryEmail != "" {
		return p.DeliveryEmail
	}
	return p.Email
}

// fetchOwnProfile asks the server who the client is.
func (c *call) fetchOwnProfile() (*ownProfile, error) {
	var p ownProfile
	status, err := c.getJSON(c.prefix()+"/users/me", "", "users_me", &p)
	switch {
	case err != nil:
		return nil, err
	case status != http.StatusOK || p.Result != "success" || p.email() == "" || p.UserID == 0:
		return nil, fmt.Errorf("status %d: no user in the profile", status)
	}
	return &p, nil
}

// prefix is the URL prefix of the request's family.
func (c *call) prefix() string {
	if c.family == cache.FamilyAPI {
		return "/api/v1"
	}
	return "/json"
}

// userPresence is GET /users/{id}/presence with slim_presence=true.
type userPresence struct {
	Result   string `json:"result"`
	Msg      string `json:"msg"`
	Presence *struct {
		Active *int64 `json:"active_timestamp"`
		Idle   *int64 `json:"idle_timestamp"`
	} `json:"presence"`
}

// learnRow reads the user's presence row from the server, so that the
// gate knows in which phase Zulip's 55-second rule stores the user's
// writes. Any failure leaves the row unknown: pings are then forwarded.
func (c *call) learnRow() {
	now := c.h.now()
	id := c.row.UserID()
	if id == 0 {
		p, err := c.fetchOwnProfile()
		if err != nil {
			c.row.Learn(now, false, false, 0, 0)
			return
		}
		id = p.UserID
		c.row.SetUser(id, p.DateJoined)
	}
	path := c.prefix() + "/users/" + strconv.FormatInt(id, 10) + "/presence"
	var ans userPresence
	status, err := c.getJSON(path, "slim_presence=true", "user_presence", &ans)
	switch {
	case err != nil:
		c.row.Learn(now, false, false, 0, 0)
	case status == http.StatusOK && ans.Presence != nil && ans.Presence.Active != nil && ans.Presence.Idle != nil:
		c.row.Learn(now, true, true, *ans.Presence.Active, *ans.Presence.Idle)
	case status == http.StatusBadRequest && strings.HasPrefix(ans.Msg, "No presence data for "):
		c.row.Learn(now, true, false, 0, 0) // no row yet: the next write creates it
	default:
		c.row.Learn(now, false, false, 0, 0)
	}
}
