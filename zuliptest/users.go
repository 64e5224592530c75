package zuliptest

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
	})
}

func writeUserFields(j *jsonWriter, u *user) {
	j.int("user_id", u.ID)
	j.str("email", u.Email)
	j.str("full_name", u.FullName)
	j.bool("is_active", u.active)
	j.bool("is_bot", u.Role == RoleBot)
	j.int("role", u.Role.zulipRole())
}
