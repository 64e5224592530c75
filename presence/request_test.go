package presence

import (
	"net/url"
	"testing"
)

func TestKind(t *testing.T) {
	tests := []struct {
		name string
		r    Request
		want Kind
	}{
		{"ping wins over everything", Request{Sent: ParamPingOnly | ParamLastUpdateID | ParamSlimPresence, PingOnly: true, SlimPresence: true}, KindPing},
		{"last_update_id forces modern", Request{Sent: ParamLastUpdateID | ParamSlimPresence, LastUpdateID: 5}, KindModern},
		{"modern with cursor -1", Request{Sent: ParamLastUpdateID, LastUpdateID: -1}, KindModern},
		{"modern with cursor 0", Request{Sent: ParamLastUpdateID}, KindModern},
		{"ping_only=false is not ping", Request{Sent: ParamPingOnly | ParamLastUpdateID}, KindModern},
		{"slim", Request{Sent: ParamSlimPresence, SlimPresence: true}, KindSlim},
		{"slim_presence=false is legacy", Request{Sent: ParamSlimPresence}, KindLegacy},
		{"nothing is legacy", Request{Sent: ParamStatus, Status: "active"}, KindLegacy},
	}
	for _, tc := range tests {
		if got := tc.r.Kind(); got != tc.want {
			t.Errorf("%s: Kind() = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{KindPing: "ping", KindModern: "modern", KindSlim: "slim", KindLegacy: "legacy", 0: "Kind(0)", 9: "Kind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", k, got, want)
		}
	}
}

func TestActiveAndWindowDays(t *testing.T) {
	r := Request{Status: "active"}
	if !r.Active() {
		t.Error("active request not Active")
	}
	if r.WindowDays() != 14 {
		t.Errorf("default WindowDays() = %d, want 14", r.WindowDays())
	}
	r = Request{Status: "idle", Sent: ParamHistoryLimitDays, HistoryLimitDays: 0}
	if r.Active() {
		t.Error("idle request Active")
	}
	if r.WindowDays() != 0 {
		t.Errorf("WindowDays() = %d, want 0 as sent", r.WindowDays())
	}
	r.HistoryLimitDays = 365000
	if r.WindowDays() != 365000 {
		t.Errorf("WindowDays() = %d, want 365000", r.WindowDays())
	}
}

func TestEncode(t *testing.T) {
	tests := []struct {
		r    Request
		want url.Values
	}{
		{Request{}, url.Values{}},
		{Request{Sent: ParamStatus, Status: "active"}, url.Values{"status": {"active"}}},
		{
			Request{Sent: ParamStatus | ParamPingOnly | ParamNewUserInput | ParamLastUpdateID, Status: "active", NewUserInput: true, LastUpdateID: 123},
			url.Values{"status": {"active"}, "ping_only": {"false"}, "new_user_input": {"true"}, "last_update_id": {"123"}},
		},
		{
			Request{Sent: ParamStatus | ParamSlimPresence | ParamHistoryLimitDays | ParamLastUpdateID, Status: "idle", SlimPresence: true, HistoryLimitDays: -3, LastUpdateID: -1},
			url.Values{"status": {"idle"}, "slim_presence": {"true"}, "history_limit_days": {"-3"}, "last_update_id": {"-1"}},
		},
		// Fields not sent are left out whatever they hold.
		{Request{Sent: ParamStatus, Status: "idle", PingOnly: true, LastUpdateID: 9}, url.Values{"status": {"idle"}}},
		// Values that Zulip would reject still encode faithfully.
		{Request{Sent: ParamStatus, Status: "a b&c=d%é"}, url.Values{"status": {"a b&c=d%é"}}},
	}
	for _, tc := range tests {
		got := tc.r.Encode()
		if want := tc.want.Encode(); got != want {
			t.Errorf("Encode(%+v) = %q, want %q", tc.r, got, want)
		}
	}
	r := Request{Sent: ParamStatus | ParamPingOnly | ParamNewUserInput | ParamSlimPresence | ParamLastUpdateID | ParamHistoryLimitDays,
		Status: "active", NewUserInput: true, LastUpdateID: 7, HistoryLimitDays: 14}
	want := "history_limit_days=14&last_update_id=7&new_user_input=true&ping_only=false&slim_presence=false&status=active"
	if got := r.Encode(); got != want {
		t.Errorf("Encode() = %q, want %q", got, want)
	}
}
