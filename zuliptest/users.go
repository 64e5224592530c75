package zuliptest

import (
	"crypto/md5"
	"encoding/hex"
	"strings"
	"time"
)

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
	// get_members_backend's signature order: include_custom_profile_fields,
	// then client_gravatar.
	if _, err := c.form.optionalBool("include_custom_profile_fields", false); err != nil {
		return err.reply()
	}
	clientGravatar, err := c.form.optionalBool("client_gravatar", true)
	if err != nil {
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
			writeUserFields(j, viewer, u, clientGravatar)
			j.end()
		}
		for _, u := range hidden {
			writeInaccessibleUser(j, c.rm.fakeEmailLocked(u.ID), u.ID, c.rm.s.settings.FeatureLevel)
		}
		j.endArray()
	}, "client_gravatar", "include_custom_profile_fields")
}

// getOwnUser is GET users/me (get_profile_backend, no typed_endpoint: it
// lists no parameter as ignored): the user's own row, with its avatar URL
// (client_gravatar=False) and max_message_id, -1 for a user with no
// messages, as every simulated user is.
func (c *call) getOwnUser(u *user) reply {
	return successReply(func(j *jsonWriter) {
		writeUserFields(j, u, u, false)
		j.int("max_message_id", -1)
	}, nil)
}

// Feature levels at which the user object changed.
const (
	// flNoBillingAdmin: is_billing_admin left the user object (level
	// 363, Zulip 10.0).
	flNoBillingAdmin = 363
	// flImportedStub: is_imported_stub joined it (level 433, 12.0
	// development series).
	flImportedStub = 433
)

// writeUserFields is format_user_row for a user seen by viewer, in its
// key order. The simulated users are neither admins nor owners, keep
// Zulip's default avatar (Gravatar, version 1) and time zone (""), and
// have no custom profile fields; GET users asks for none.
func writeUserFields(j *jsonWriter, viewer, u *user, clientGravatar bool) {
	fl := u.realm.s.settings.FeatureLevel
	j.str("email", u.Email)
	j.int("user_id", u.ID)
	j.int("avatar_version", 1)
	j.bool("is_admin", false)
	j.bool("is_owner", false)
	j.bool("is_guest", u.Role == RoleGuest)
	if fl < flNoBillingAdmin {
		j.bool("is_billing_admin", false)
	}
	j.int("role", u.Role.zulipRole())
	j.bool("is_bot", u.Role == RoleBot)
	j.str("full_name", u.FullName)
	j.str("timezone", "")
	j.bool("is_active", u.active)
	j.str("date_joined", u.realm.s.settings.formatDateJoined(u.dateJoined))
	if canAccessDeliveryEmail(viewer, u) {
		j.str("delivery_email", u.DeliveryEmail)
	} else {
		j.raw("delivery_email", "null")
	}
	if fl >= flImportedStub {
		j.bool("is_imported_stub", false)
	}
	if clientGravatar {
		j.raw("avatar_url", "null") // the client computes Gravatar's URL
	} else {
		j.str("avatar_url", gravatarURL(u.DeliveryEmail))
	}
	if u.Role == RoleBot {
		botType := int64(1) // DEFAULT_BOT
		if u.incomingWebhook {
			botType = 2 // INCOMING_WEBHOOK_BOT
		}
		j.int("bot_type", botType)
		j.raw("bot_owner_id", "null") // as legacy data may have it
	}
}

// canAccessDeliveryEmail is can_access_delivery_email for viewers who are
// neither administrators nor moderators, as every simulated user is.
func canAccessDeliveryEmail(viewer, u *user) bool {
	switch {
	case viewer.ID == u.ID, u.visibility == EmailVisibilityEveryone:
		return true
	case u.visibility == EmailVisibilityMembers:
		return viewer.Role != RoleGuest
	}
	return false
}

// gravatarURL is get_gravatar_url for the default avatar: the MD5 of the
// lower-cased delivery email, with d=identicon and the avatar version.
func gravatarURL(email string) string {
	sum := md5.Sum([]byte(strings.ToLower(email)))
	return "https://secure.gravatar.com/avatar/" + hex.EncodeToString(sum[:]) + "?d=identicon&version=1"
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
// no delivery email, the static unknown-user avatar, no profile data;
// is_billing_admin before level 363, is_imported_stub from level 433.
func writeInaccessibleUser(j *jsonWriter, email string, id int64, fl int) {
	j.begin()
	j.str("email", email)
	j.int("user_id", id)
	j.int("avatar_version", 1)
	j.bool("is_admin", false)
	j.bool("is_owner", false)
	j.bool("is_guest", false)
	if fl < flNoBillingAdmin {
		j.bool("is_billing_admin", false)
	}
	j.int("role", RoleMember.zulipRole())
	j.bool("is_bot", false)
	j.str("full_name", "Unknown user")
	j.str("timezone", "")
	j.bool("is_active", true)
	j.str("date_joined", "1970-01-01T00:00:00+00:00")
	j.raw("delivery_email", "null")
	j.str("avatar_url", unknownUserAvatar)
	j.raw("profile_data", "{}")
	if fl >= flImportedStub {
		j.bool("is_imported_stub", false)
	}
	j.end()
}

// unknownUserAvatar is get_avatar_for_inaccessible_user():
// staticfiles_storage.url("images/unknown-user-avatar.png"), as a
// production server without a CDN serves it.
const unknownUserAvatar = "/static/images/unknown-user-avatar.png"
