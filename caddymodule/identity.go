package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
)

// bindUser makes sure the session knows whose presence row it writes. On
// /api the Basic credentials name the user's email; on /json the session
// cookie names nobody the proxy can see, so the server is asked once per
// session (GET /json/users/me, with the client's own cookies), and only
// once the session was accepted. It returns false when the server refused
// the credentials; any other failure leaves the user unknown, so the ping
// is forwarded.
func (c *call) bindUser() bool {
	if c.family == cache.FamilyAPI || c.sess.User() != "" {
		return true
	}
	if !c.sess.Profile.Lead(c.r.Context()) {
		return c.sess.Trusted(c.h.now(), time.Duration(c.h.TrustWindow))
	}
	defer c.sess.Profile.End()
	if c.sess.User() != "" {
		return true // bound by a request that led before this one
	}
	p, err := c.fetchOwnProfile()
	switch {
	case errors.Is(err, errDenied):
		return false
	case err != nil:
		c.debug("cannot tell whose session this is: " + err.Error())
		return true
	}
	// The id too: an address given up by one user may be another's.
	u := c.h.store.UserKey(c.host, lowerASCII(p.email()), strconv.FormatInt(p.UserID, 10))
	// The row learns the user's id before the session names it, so that
	// no request reading the row asks for the profile again. The session
	// was accepted, so its writes may have moved the row unseen.
	row := c.h.store.RowFor(u, c.h.now())
	row.SetUser(p.UserID, p.DateJoined.at, p.DateJoined.precision)
	row.Wrote()
	c.sess.Bind(u)
	return true
}

// ownProfile is the part of GET /users/me that names the user. Zulip's
// Basic authentication takes the delivery email, which the user's own
// profile carries; the API email is the fallback where it is the same.
type ownProfile struct {
	Result        string   `json:"result"`
	UserID        int64    `json:"user_id"`
	Email         string   `json:"email"`
	DeliveryEmail string   `json:"delivery_email"`
	DateJoined    joinDate `json:"date_joined"`
}

// joinDate is a date_joined as Zulip sends it: Python's isoformat, to the
// microsecond (or the second when it has none) before Zulip 10.0, and
// to the minute since (format_user_row, isoformat(timespec="minutes")).
// The date lies in [at, at+precision). A value in no known form leaves it
// unknown, which costs local answers but binds the user all the same.
type joinDate struct {
	at        time.Time
	precision time.Duration
}

// joinDateLayouts are the forms of isoformat for an aware UTC datetime.
var joinDateLayouts = []struct {
	layout    string
	precision time.Duration
}{
	{"2006-01-02T15:04Z07:00", time.Minute},
	{"2006-01-02T15:04:05Z07:00", time.Second},
	{"2006-01-02T15:04:05.000000Z07:00", time.Microsecond},
}

func (d *joinDate) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) != nil {
		return nil
	}
	for _, l := range joinDateLayouts {
		if t, err := time.Parse(l.layout, s); err == nil {
			*d = joinDate{at: t, precision: l.precision}
			return nil
		}
	}
	return nil
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

// knowUserID makes sure the row mirror knows its user's id (and
// date_joined), asking the server once per user.
func (c *call) knowUserID(row *cache.RowMirror) error {
	if row.UserID() != 0 {
		return nil
	}
	p, err := c.fetchOwnProfile()
	if err != nil {
		return err
	}
	row.SetUser(p.UserID, p.DateJoined.at, p.DateJoined.precision)
	return nil
}

// prefix is the URL prefix of the request's family.
func (c *call) prefix() string {
	if c.family == cache.FamilyAPI {
		return "/api/v1"
	}
	return "/json"
}

// userPresence is GET /users/{id}/presence, in either shape: the slim one
// (active_timestamp and idle_timestamp), which only Zulip after 11.x
// answers to slim_presence=true, or the legacy one every released version
// answers (get_presence_backend in zerver/views/presence.py).
type userPresence struct {
	Result   string `json:"result"`
	Msg      string `json:"msg"`
	Presence *struct {
		Active  *int64 `json:"active_timestamp"`
		Idle    *int64 `json:"idle_timestamp"`
		Website *struct {
			Status    string `json:"status"`
			Timestamp *int64 `json:"timestamp"`
		} `json:"website"`
	} `json:"presence"`
}

// readRow reads the user's presence row from the server when that may
// tell more than the mirror knows, so that the gate knows when Zulip last
// stored it. One request of a burst reads; the others wait for it, even
// when they find the row not stale because its read has started. It returns false when the server refused the
// session's credentials; any other failure leaves the row as it was, so
// the ping is forwarded.
func (c *call) readRow(row *cache.RowMirror) bool {
	if !row.Reading.Lead(c.r.Context()) {
		return true
	}
	defer row.Reading.End()
	if !row.NeedsRead(c.h.now(), c.window()) {
		return true // read by a request that led before this one
	}
	row.StartRead()
	err := c.fetchRow(row)
	if err != nil {
		row.FailRead(c.h.now())
		c.debug("reading the user's presence row failed: " + err.Error())
	}
	return !errors.Is(err, errDenied)
}

func (c *call) fetchRow(row *cache.RowMirror) error {
	if err := c.knowUserID(row); err != nil {
		return err
	}
	path := c.rowPath(row)
	host := c.hostFor()
	query := "slim_presence=true"
	if host.LegacyRowReads(c.h.now()) {
		query = "" // the server would list it as ignored
	}
	var ans userPresence
	status, err := c.getJSON(path, query, "user_presence", &ans)
	switch {
	case err != nil:
		return err
	case status == http.StatusOK && ans.Result == "success" && ans.Presence != nil:
		return c.observeRead(host, row, &ans)
	case status == http.StatusBadRequest && strings.HasPrefix(ans.Msg, "No presence data for "):
		row.ReadNoRow()
		return nil
	}
	return fmt.Errorf("status %d", status)
}

// observeRead applies a successful one-user read to the row, and records
// which shape the host answers, asking for the slim one again after a
// resync interval in case the server was upgraded.
func (c *call) observeRead(host *cache.Host, row *cache.RowMirror, ans *userPresence) error {
	if p := ans.Presence; p.Active != nil && p.Idle != nil {
		host.MarkLegacyRowReads(time.Time{})
		row.ReadRow(*p.Active, *p.Idle)
		return nil
	}
	w := ans.Presence.Website
	if w == nil || w.Timestamp == nil || (w.Status != "active" && w.Status != "idle") {
		return fmt.Errorf("presence in neither shape")
	}
	host.MarkLegacyRowReads(c.h.now().Add(time.Duration(c.h.ResyncInterval)))
	row.ObserveLegacy(w.Status == "active", *w.Timestamp)
	return nil
}

// rowPath is the path of GET /users/{id}/presence for the row's user.
func (c *call) rowPath(row *cache.RowMirror) string {
	return c.prefix() + "/users/" + strconv.FormatInt(row.UserID(), 10) + "/presence"
}
