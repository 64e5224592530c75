package presence

import (
	"net/url"
	"strconv"
)

// Kind is the shape of answer a presence request asks for.
type Kind uint8

// The kinds of presence request, in order of precedence: ping_only wins over
// everything, a last_update_id forces the modern format even with
// slim_presence=false, and slim_presence=true alone asks for a full modern
// table.
const (
	// KindPing is a ping_only=true request: the answer carries no presence data.
	KindPing Kind = iota + 1
	// KindModern is an incremental request: it sent last_update_id.
	KindModern
	// KindSlim is a full fetch in the modern, user-id-keyed format.
	KindSlim
	// KindLegacy is a full fetch in the legacy, email-keyed format.
	KindLegacy
)

// String returns "ping", "modern", "slim" or "legacy".
func (k Kind) String() string {
	switch k {
	case KindPing:
		return "ping"
	case KindModern:
		return "modern"
	case KindSlim:
		return "slim"
	case KindLegacy:
		return "legacy"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Param is a bit set of the documented parameters a client sent.
type Param uint8

// The six documented parameters of POST /users/me/presence.
const (
	ParamStatus           Param = 1 << iota // status
	ParamPingOnly                           // ping_only
	ParamNewUserInput                       // new_user_input
	ParamSlimPresence                       // slim_presence
	ParamLastUpdateID                       // last_update_id
	ParamHistoryLimitDays                   // history_limit_days
)

// DefaultWindowDays is Zulip's history window when history_limit_days is
// absent.
const DefaultWindowDays = 14

// Request is a presence request as Zulip understands it.
type Request struct {
	// Sent records which documented parameters were present.
	Sent Param
	// Status is "active" or "idle" once the request is accepted.
	Status string
	// PingOnly is ping_only as sent (false when absent).
	PingOnly bool
	// NewUserInput is new_user_input as sent (false when absent).
	NewUserInput bool
	// SlimPresence is slim_presence as sent (false when absent). Zulip
	// forces it on when last_update_id is present; Kind accounts for that,
	// the field does not, so Encode reproduces what the client sent.
	SlimPresence bool
	// LastUpdateID is meaningful when Sent&ParamLastUpdateID != 0.
	LastUpdateID int64
	// HistoryLimitDays is meaningful when Sent&ParamHistoryLimitDays != 0.
	HistoryLimitDays int64
}

// Kind classifies the request: ping (PingOnly) over modern (last_update_id
// sent, whatever slim_presence says) over slim (SlimPresence) over legacy.
func (r *Request) Kind() Kind {
	switch {
	case r.PingOnly:
		return KindPing
	case r.Sent&ParamLastUpdateID != 0:
		return KindModern
	case r.SlimPresence:
		return KindSlim
	}
	return KindLegacy
}

// Active reports whether Status is "active".
func (r *Request) Active() bool { return r.Status == "active" }

// WindowDays returns HistoryLimitDays if it was sent, else Zulip's default
// of 14 days.
func (r *Request) WindowDays() int64 {
	if r.Sent&ParamHistoryLimitDays != 0 {
		return r.HistoryLimitDays
	}
	return DefaultWindowDays
}

// Encode returns an application/x-www-form-urlencoded body carrying exactly
// the sent parameters with canonical values (true/false, decimal integers,
// status as is), keys sorted as url.Values.Encode sorts them.
func (r *Request) Encode() string {
	// Appending in Zulip's signature order yields sorted keys: the
	// signature is alphabetical.
	b := make([]byte, 0, 96)
	if r.Sent&ParamHistoryLimitDays != 0 {
		b = strconv.AppendInt(appendKey(b, "history_limit_days"), r.HistoryLimitDays, 10)
	}
	if r.Sent&ParamLastUpdateID != 0 {
		b = strconv.AppendInt(appendKey(b, "last_update_id"), r.LastUpdateID, 10)
	}
	if r.Sent&ParamNewUserInput != 0 {
		b = strconv.AppendBool(appendKey(b, "new_user_input"), r.NewUserInput)
	}
	if r.Sent&ParamPingOnly != 0 {
		b = strconv.AppendBool(appendKey(b, "ping_only"), r.PingOnly)
	}
	if r.Sent&ParamSlimPresence != 0 {
		b = strconv.AppendBool(appendKey(b, "slim_presence"), r.SlimPresence)
	}
	if r.Sent&ParamStatus != 0 {
		b = append(appendKey(b, "status"), url.QueryEscape(r.Status)...)
	}
	return string(b)
}

func appendKey(b []byte, key string) []byte {
	if len(b) > 0 {
		b = append(b, '&')
	}
	return append(append(b, key...), '=')
}
