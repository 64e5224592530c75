package zuliptest

import "time"

// getUsers is GET users: every user of the realm, deactivated ones
// included. For a guest whose access the realm restricts
// (Settings.RestrictGuestUserAccess, whatever
// CanAccessAllUsersGroupLimitsPresence says) the users it can access
// (listsLocked) come first, as they are, then every other user as an
// "Unknown user" entry (get_user_dicts_in_realm, then get_users_for_api
// adding the inaccessible entries after the accessible ones). The
// documented parameters are validated and otherwise ignored; user_ids is
// not simulated, so it is reported as unsupported rather than silently
// ignored.
func (c *call) getUsers(viewer *user) reply {
	if _, err := c.form.optionalBool("client_gravatar", true); err != nil {
		return err.reply()
	}
	if _, err := c.form.optionalBool("include_custom_profile_fields", false); err != nil {
		return err.reply()
	}
	restricted := c.rm.guestRestrictedLocked(viewer)
	return c.success(func(j *jsonWriter) {
		j.array("members")
		var hidden []*user
		for _, u := range c.rm.users {
			if restricted && !c.rm.listsLocked(viewer, u) {
				hidden = append(hidden, u)
				continue
			}
			j.begin()
			writeUserFields(j, u)
			j.end()
		}
		for _, u := range hidden {
			writeInaccessibleUser(j, c.rm.fakeEmailLocked(u.ID), u.ID)
		}
		j.endArray()
	}, "client_gravatar", "include_custom_profile_fields")
}

// getOwnUser is GET users/me.
func (c *call) getOwnUser(u *user) reply {
	return c.success(func(j *jsonWriter) {
		writeUserFields(j, u)
		// One's own profile always shows the real (delivery) email
		// (can_access_delivery_email).
		j.str("delivery_email", u.DeliveryEmail)
	})
}

func writeUserFields(j *jsonWriter, u *user) {
	j.int("user_id", u.ID)
	j.str("email", u.Email)
	j.str("full_name", u.FullName)
	j.bool("is_active", u.active)
	j.bool("is_bot", u.Role == RoleBot)
	j.int("role", u.Role.zulipRole())
	j.str("date_joined", u.realm.s.settings.formatDateJoined(u.dateJoined))
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

// writeInaccessibleUser is get_data_for_inaccessible_user: every field in
// Zulip's order, the name "Unknown user", a member, active, not a bot,
// joined at the Unix epoch (isoformat() with seconds, in every version),
// no delivery email, the static unknown-user avatar, no profile data.
// Zulip 12.0 (feature level 433) adds "is_imported_stub": false, which
// this model of 11.x leaves out.
func writeInaccessibleUser(j *jsonWriter, email string, id int64) {
	j.begin()
	j.str("email", email)
	j.int("user_id", id)
	j.int("avatar_version", 1)
	j.bool("is_admin", false)
	j.bool("is_owner", false)
	j.bool("is_guest", false)
	j.int("role", RoleMember.zulipRole())
	j.bool("is_bot", false)
	j.str("full_name", "Unknown user")
	j.str("timezone", "")
	j.bool("is_active", true)
	j.str("date_joined", "1970-01-01T00:00:00+00:00")
	j.raw("delivery_email", "null")
	j.str("avatar_url", unknownUserAvatar)
	j.raw("profile_data", "{}")
	j.end()
}

// unknownUserAvatar is get_avatar_for_inaccessible_user():
// staticfiles_storage.url("images/unknown-user-avatar.png"), as a
// production server without a CDN serves it.
const unknownUserAvatar = "/static/images/unknown-user-avatar.png"
