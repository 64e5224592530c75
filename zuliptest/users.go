package zuliptest

import "time"

// getUsers is GET users: every user of the realm, deactivated ones
// included. A restricted guest sees only the users it can access, and the
// bots, which guests can always see. The documented parameters are
// validated and otherwise ignored; user_ids is not simulated, so it is
// reported as unsupported rather than silently ignored.
func (c *call) getUsers(viewer *user) reply {
	if _, err := c.form.optionalBool("client_gravatar", true); err != nil {
		return err.reply()
	}
	if _, err := c.form.optionalBool("include_custom_profile_fields", false); err != nil {
		return err.reply()
	}
	restricted := c.rm.restrictedLocked(viewer)
	return c.success(func(j *jsonWriter) {
		j.array("members")
		for _, u := range c.rm.users {
			if restricted && u.Role != RoleBot && !c.rm.canAccessLocked(viewer, u) {
				continue
			}
			j.begin()
			writeUserFields(j, u)
			j.end()
		}
		j.endArray()
	}, "client_gravatar", "include_custom_profile_fields")
}

// getOwnUser is GET users/me.
func (c *call) getOwnUser(u *user) reply {
	return c.success(func(j *jsonWriter) {
		writeUserFields(j, u)
		// One's own profile always shows the real (delivery) email.
		j.str("delivery_email", u.Email)
	})
}

func writeUserFields(j *jsonWriter, u *user) {
	j.int("user_id", u.ID)
	j.str("email", u.Email)
	j.str("full_name", u.FullName)
	j.bool("is_active", u.active)
	j.bool("is_bot", u.Role == RoleBot)
	j.int("role", u.Role.zulipRole())
	j.str("date_joined", isoformat(u.dateJoined))
}

// isoformat is Python's datetime.isoformat for an aware UTC datetime:
// microseconds only when there are some.
func isoformat(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond()/1000 == 0 {
		return t.Format("2006-01-02T15:04:05+00:00")
	}
	return t.Format("2006-01-02T15:04:05.000000+00:00")
}
