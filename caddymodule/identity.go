package caddymodule

import (
	"encoding/base64"
	"encoding/json"
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
	rec, err := fetch(c.next, subrequest(c.r, http.MethodGet, c.prefix()+"/users/me", nil))
	if err != nil {
		return nil, err
	}
	c.h.metrics.observeUpstream("users_me", rec.body.Len())
	if !rec.ok() {
		return nil, fmt.Errorf("status %d", rec.status)
	}
	var p ownProfile
	if err := json.Unmarshal(rec.body.Bytes(), &p); err != nil {
		return nil, err
	}
	if p.Result != "success" || p.email() == "" || p.UserID == 0 {
		return nil, fmt.Errorf("no user in the profile")
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
	sub := subrequest(c.r, http.MethodGet, path, nil)
	sub.URL.RawQuery = "slim_presence=true"
	rec, err := fetch(c.next, sub)
	if err != nil {
		c.row.Learn(now, false, false, 0, 0)
		return
	}
	c.h.metrics.observeUpstream("user_presence", rec.body.Len())
	var ans userPresence
	_ = json.Unmarshal(rec.body.Bytes(), &ans)
	switch {
	case rec.ok() && ans.Presence != nil && ans.Presence.Active != nil && ans.Presence.Idle != nil:
		c.row.Learn(now, true, true, *ans.Presence.Active, *ans.Presence.Idle)
	case rec.status == http.StatusBadRequest && strings.HasPrefix(ans.Msg, "No presence data for "):
		c.row.Learn(now, true, false, 0, 0) // no row yet: the next write creates it
	default:
		c.row.Learn(now, false, false, 0, 0)
	}
}
