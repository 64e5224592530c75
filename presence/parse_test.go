package presence

import (
	"net/url"
	"slices"
	"strings"
	"testing"
)

const (
	// Bodies as the clients send them (spec §5).
	webAppBody  = "status=active&ping_only=false&new_user_input=true&last_update_id=123"
	flutterBody = "status=active&ping_only=false&new_user_input=false&slim_presence=true"
	mobileBody  = "status=active&new_user_input=false"

	// zulip-js posts with the form-data package: 26 dashes and 24 digits.
	zulipJSBoundary = "--------------------------515890814546601021194782"
	zulipJSType     = "multipart/form-data; boundary=" + zulipJSBoundary
	zulipJSBody     = "--" + zulipJSBoundary + "\r\n" +
		"Content-Disposition: form-data; name=\"status\"\r\n\r\nactive\r\n" +
		"--" + zulipJSBoundary + "\r\n" +
		"Content-Disposition: form-data; name=\"slim_presence\"\r\n\r\ntrue\r\n" +
		"--" + zulipJSBoundary + "--\r\n"

	// Node's built-in FormData (undici).
	undiciBoundary = "----formdata-undici-031516467381"
	undiciType     = "multipart/form-data; boundary=" + undiciBoundary
	undiciBody     = "--" + undiciBoundary + "\r\n" +
		"Content-Disposition: form-data; name=\"status\"\r\n\r\nidle\r\n" +
		"--" + undiciBoundary + "\r\n" +
		"Content-Disposition: form-data; name=\"last_update_id\"\r\n\r\n-1\r\n" +
		"--" + undiciBoundary + "\r\n" +
		"Content-Disposition: form-data; name=\"history_limit_days\"\r\n\r\n365000\r\n" +
		"--" + undiciBoundary + "--\r\n"
)

// multipartBody builds a zulip-js style body from raw parts (headers, a
// blank line, the value).
func multipartBody(parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString("--" + zulipJSBoundary + "\r\n" + p + "\r\n")
	}
	b.WriteString("--" + zulipJSBoundary + "--\r\n")
	return b.String()
}

func field(name, value string) string {
	return "Content-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" + value
}

func TestParseAccepted(t *testing.T) {
	all := ParamStatus | ParamPingOnly | ParamNewUserInput | ParamSlimPresence | ParamLastUpdateID | ParamHistoryLimitDays
	tests := []struct {
		name              string
		contentType, body string
		query             string
		want              Request
		kind              Kind
	}{
		{
			name: "web app", contentType: formType + "; charset=UTF-8", body: webAppBody,
			want: Request{Sent: ParamStatus | ParamPingOnly | ParamNewUserInput | ParamLastUpdateID, Status: "active", NewUserInput: true, LastUpdateID: 123},
			kind: KindModern,
		},
		{
			name: "flutter", contentType: formType + "; charset=utf-8", body: flutterBody,
			want: Request{Sent: ParamStatus | ParamPingOnly | ParamNewUserInput | ParamSlimPresence, Status: "active", SlimPresence: true},
			kind: KindSlim,
		},
		{
			name: "zulip-mobile", contentType: formType, body: mobileBody,
			want: Request{Sent: ParamStatus | ParamNewUserInput, Status: "active"},
			kind: KindLegacy,
		},
		{
			name: "ping", contentType: formType, body: "status=idle&ping_only=true",
			want: Request{Sent: ParamStatus | ParamPingOnly, Status: "idle", PingOnly: true},
			kind: KindPing,
		},
		{
			name: "settings panel full fetch", contentType: formType,
			body: "last_update_id=-1&history_limit_days=365000&ping_only=false&status=idle",
			want: Request{Sent: ParamStatus | ParamPingOnly | ParamLastUpdateID | ParamHistoryLimitDays, Status: "idle", LastUpdateID: -1, HistoryLimitDays: 365000},
			kind: KindModern,
		},
		{
			name: "all six", contentType: formType,
			body: "history_limit_days=0&last_update_id=9223372036854775807&new_user_input=false&ping_only=false&slim_presence=false&status=active",
			want: Request{Sent: all, Status: "active", LastUpdateID: 9223372036854775807},
			kind: KindModern,
		},
		{
			name: "negative extremes", contentType: formType,
			body: "history_limit_days=-9223372036854775808&last_update_id=-5&status=idle",
			want: Request{Sent: ParamStatus | ParamHistoryLimitDays | ParamLastUpdateID, Status: "idle", HistoryLimitDays: -9223372036854775808, LastUpdateID: -5},
			kind: KindModern,
		},
		{
			name: "zulip-js multipart", contentType: zulipJSType, body: zulipJSBody,
			want: Request{Sent: ParamStatus | ParamSlimPresence, Status: "active", SlimPresence: true},
			kind: KindSlim,
		},
		{
			name: "undici multipart", contentType: undiciType, body: undiciBody,
			want: Request{Sent: ParamStatus | ParamLastUpdateID | ParamHistoryLimitDays, Status: "idle", LastUpdateID: -1, HistoryLimitDays: 365000},
			kind: KindModern,
		},
		{
			name: "multipart text/plain part", contentType: zulipJSType,
			body: multipartBody("Content-Disposition: form-data; name=\"status\"\r\nContent-Type: text/plain; charset=UTF-8\r\n\r\nidle"),
			want: Request{Sent: ParamStatus, Status: "idle"},
			kind: KindLegacy,
		},
		{
			name: "query string only", query: "status=active&slim_presence=true",
			want: Request{Sent: ParamStatus | ParamSlimPresence, Status: "active", SlimPresence: true},
			kind: KindSlim,
		},
		{
			name: "body wins over query", contentType: formType, body: "status=idle&ping_only=false",
			query: "status=active&ping_only=true&slim_presence=true",
			want:  Request{Sent: ParamStatus | ParamPingOnly | ParamSlimPresence, Status: "idle", SlimPresence: true},
			kind:  KindSlim,
		},
		{
			name: "body wins even where the query is invalid", contentType: formType, body: "status=idle&ping_only=false",
			query: "status=foo&ping_only=1",
			want:  Request{Sent: ParamStatus | ParamPingOnly, Status: "idle"},
			kind:  KindLegacy,
		},
		{
			name: "media type is case-insensitive", contentType: "Application/X-WWW-Form-URLEncoded; Charset=UTF-8", body: mobileBody,
			want: Request{Sent: ParamStatus | ParamNewUserInput, Status: "active"},
			kind: KindLegacy,
		},
		{
			name: "JSON body is not read, but empty", contentType: "application/json", query: "status=idle",
			want: Request{Sent: ParamStatus, Status: "idle"},
			kind: KindLegacy,
		},
		{
			name: "empty multipart body", contentType: zulipJSType, query: "status=idle",
			want: Request{Sent: ParamStatus, Status: "idle"},
			kind: KindLegacy,
		},
		{
			name: "percent-encoded names and values", contentType: formType, body: "st%61tus=%61ctive&ping%5Fonly=f%61lse&&",
			want: Request{Sent: ParamStatus | ParamPingOnly, Status: "active"},
			kind: KindLegacy,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Parse(tc.contentType, []byte(tc.body), tc.query)
			if p.Err != nil || p.Unusual {
				t.Fatalf("Err = %v, Unusual = %v; want neither", errString(p.Err), p.Unusual)
			}
			if p.Request != tc.want {
				t.Errorf("Request = %+v\nwant      %+v", p.Request, tc.want)
			}
			if k := p.Request.Kind(); k != tc.kind {
				t.Errorf("Kind() = %v, want %v", k, tc.kind)
			}
		})
	}
}

func errString(e *Error) string {
	if e == nil {
		return "<nil>"
	}
	return e.Msg
}

// TestParseErrors checks every parameter error Zulip gives (spec §1.8):
// which check fails, with the msg of Zulip's 400 answer.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		body string
		msg  string
	}{
		{"ping_only=true", "Missing 'status' argument"},
		{"", "Missing 'status' argument"},
		{"status=foo", "Invalid status: foo"},
		{"status=", "Invalid status: "},
		{"status=Active", "Invalid status: Active"},
		{"status=" + url.QueryEscape("a\"b\\c\x01\x1f\té/\u2028"), "Invalid status: a\"b\\c\x01\x1f\té/\u2028"},
		{"status=active&last_update_id=abc", "last_update_id is not valid JSON"},
		{"status=active&last_update_id=1.5", "last_update_id is not an integer"},
		{"status=active&last_update_id=%225%22", "last_update_id is not an integer"},
		{"status=active&ping_only=1", "ping_only is not a boolean"},
		{"status=active&ping_only=True", "ping_only is not valid JSON"},
		{"status=active&history_limit_days=", "history_limit_days is not valid JSON"},
		{"status=active&history_limit_days=true", "history_limit_days is not an integer"},
		{"status=active&new_user_input=yes", "new_user_input is not valid JSON"},
		{"status=active&new_user_input=0", "new_user_input is not a boolean"},
		{"status=active&slim_presence=", "slim_presence is not valid JSON"},
		{"status=active&slim_presence=null", "slim_presence is not a boolean"},
	}
	for _, tc := range tests {
		p := Parse(formType, []byte(tc.body), "")
		if p.Err == nil {
			t.Errorf("%q: no error, want %q", tc.body, tc.msg)
			continue
		}
		if p.Err.Msg != tc.msg {
			t.Errorf("%q: got %q, want %q", tc.body, p.Err.Msg, tc.msg)
		}
		if p.Unusual {
			t.Errorf("%q: Unusual", tc.body)
		}
	}
}

// TestParseErrorOrder checks that the first failure in Zulip's order wins:
// history_limit_days, last_update_id, new_user_input, ping_only,
// slim_presence, missing status, then the status value.
func TestParseErrorOrder(t *testing.T) {
	tests := []struct {
		body string
		msg  string
	}{
		{"status=foo&slim_presence=x&ping_only=x&new_user_input=x&last_update_id=x&history_limit_days=x", "history_limit_days is not valid JSON"},
		{"status=foo&slim_presence=x&ping_only=x&new_user_input=x&last_update_id=1.5&history_limit_days=1", "last_update_id is not an integer"},
		{"status=foo&slim_presence=x&ping_only=x&new_user_input=1", "new_user_input is not a boolean"},
		{"status=foo&slim_presence=x&ping_only=1", "ping_only is not a boolean"},
		{"slim_presence=x", "slim_presence is not valid JSON"},
		{"status=foo&slim_presence=x", "slim_presence is not valid JSON"},
		{"slim_presence=true&last_update_id=5", "Missing 'status' argument"},
		{"status=foo&last_update_id=5&ping_only=true", "Invalid status: foo"},
	}
	for _, tc := range tests {
		p := Parse(formType, []byte(tc.body), "")
		if p.Err == nil || p.Err.Msg != tc.msg {
			t.Errorf("%q: got %s, want msg %q", tc.body, errString(p.Err), tc.msg)
		}
	}
}

func TestParsePartialRequestOnError(t *testing.T) {
	p := Parse(formType, []byte("status=active&last_update_id=5&ping_only=1"), "")
	if p.Err == nil {
		t.Fatal("no error")
	}
	if p.Request.Sent&ParamLastUpdateID == 0 || p.Request.LastUpdateID != 5 {
		t.Errorf("Request = %+v, want last_update_id 5 recorded", p.Request)
	}
}

// TestParseJSONValues checks Json[bool] and Json[int] decoding value by
// value; the expectations are what pydantic 2 (Zulip's validator) answers.
func TestParseJSONValues(t *testing.T) {
	const (
		ok         = ""
		invalid    = "is not valid JSON"
		notInt     = "is not an integer"
		notBool    = "is not a boolean"
		unknownErr = "?" // readers differ; only Unusual matters
	)
	tests := []struct {
		value    string
		intErr   string
		intValue int64
		boolErr  string
		unusual  bool
	}{
		{"5", ok, 5, notBool, false},
		{"-1", ok, -1, notBool, false},
		{"0", ok, 0, notBool, false},
		{"true", notInt, 0, ok, false},
		{"false", notInt, 0, ok, false},
		{"null", notInt, 0, notBool, false},
		{"1.5", notInt, 0, notBool, false},
		{"1e3", notInt, 0, notBool, false},
		{"1E2", notInt, 0, notBool, false},
		{"1.0", notInt, 0, notBool, false},
		{"-0.0", notInt, 0, notBool, false},
		{"0e0", notInt, 0, notBool, false},
		{`"5"`, notInt, 0, notBool, false},
		{`"true"`, notInt, 0, notBool, false},
		{`"é"`, notInt, 0, notBool, false},
		{`"\/"`, notInt, 0, notBool, false},
		{"", invalid, 0, invalid, false},
		{"abc", invalid, 0, invalid, false},
		{"05", invalid, 0, invalid, false},
		{"00", invalid, 0, invalid, false},
		{"-01", invalid, 0, invalid, false},
		{"+5", invalid, 0, invalid, false},
		{"True", invalid, 0, invalid, false},
		{"yes", invalid, 0, invalid, false},
		{"tru", invalid, 0, invalid, false},
		{"1 2", invalid, 0, invalid, false},
		{"5\x00", invalid, 0, invalid, false},
		{"\u00a05", invalid, 0, invalid, false},
		{"\x0c5", invalid, 0, invalid, false},
		{"-", invalid, 0, invalid, false},
		{"1.", invalid, 0, invalid, false},
		{".5", invalid, 0, invalid, false},
		{"1e", invalid, 0, invalid, false},
		{`"a`, invalid, 0, invalid, false},
		{`"\x"`, invalid, 0, invalid, false},
		{"\"\t\"", invalid, 0, invalid, false},
		{"nan", invalid, 0, invalid, false},
		{"+Infinity", invalid, 0, invalid, false},
		{"NaNx", invalid, 0, invalid, false},
		// Accepted by Zulip, but re-encoding would change the bytes.
		{" 5 ", ok, 5, notBool, true},
		{"\t5\n", ok, 5, notBool, true},
		{"\r\n5\r\n", ok, 5, notBool, true},
		{" true", notInt, 0, ok, true},
		{"-0", ok, 0, notBool, true},
		{"99999999999999999999", ok, 9223372036854775807, notBool, true},
		{"-99999999999999999999", ok, -9223372036854775808, notBool, true},
		// JSON readers disagree here.
		{"NaN", notInt, 0, notBool, true},
		{"Infinity", notInt, 0, notBool, true},
		{"-Infinity", notInt, 0, notBool, true},
		{"1e400", notInt, 0, notBool, true},
		{"[1]", notInt, 0, notBool, true},
		{"{}", notInt, 0, notBool, true},
		{`"\u0041"`, notInt, 0, notBool, true},
		{`"\ud800"`, unknownErr, 0, unknownErr, true},
		{"[1,]", invalid, 0, invalid, true},
		{strings.Repeat("[", 300) + strings.Repeat("]", 300), unknownErr, 0, unknownErr, true},
	}
	// These are unusual as integers only; as booleans they are plain errors.
	intOnlyUnusual := map[string]bool{"-0": true, "99999999999999999999": true, "-99999999999999999999": true}
	check := func(t *testing.T, name, value, wantErr string, wantUnusual bool) Parsed {
		t.Helper()
		body := url.Values{"status": {"active"}, name: {value}}.Encode()
		p := Parse(formType, []byte(body), "")
		if p.Unusual != wantUnusual {
			t.Errorf("%s=%q: Unusual = %v, want %v", name, value, p.Unusual, wantUnusual)
		}
		switch {
		case wantErr == unknownErr:
		case wantErr == ok && p.Err != nil:
			t.Errorf("%s=%q: error %s", name, value, p.Err.Msg)
		case wantErr != ok && (p.Err == nil || p.Err.Msg != name+" "+wantErr):
			t.Errorf("%s=%q: got %s, want %q", name, value, errString(p.Err), name+" "+wantErr)
		}
		return p
	}
	for _, tc := range tests {
		p := check(t, "last_update_id", tc.value, tc.intErr, tc.unusual)
		if tc.intErr == ok && p.Request.LastUpdateID != tc.intValue {
			t.Errorf("last_update_id=%q: got %d, want %d", tc.value, p.Request.LastUpdateID, tc.intValue)
		}
		check(t, "history_limit_days", tc.value, tc.intErr, tc.unusual)
		for _, name := range []string{"ping_only", "new_user_input", "slim_presence"} {
			check(t, name, tc.value, tc.boolErr, tc.unusual && !intOnlyUnusual[tc.value])
		}
	}
}

func TestParseUnusual(t *testing.T) {
	tests := []struct {
		name              string
		contentType, body string
		query             string
		wantStatus        string // Request.Status Parse still reports
	}{
		{"method field", formType, "status=active&method=GET", "", "active"},
		{"method field in query", formType, "status=active", "method=GET", "active"},
		{"api_key field", formType, "status=active&api_key=x", "", "active"},
		{"csrfmiddlewaretoken field", formType, "status=active&csrfmiddlewaretoken=x", "", "active"},
		{"duplicate extra", formType, "status=active&note=a&note=b", "", "active"},
		{"extra in body and query", formType, "status=active&note=a", "note=b", "active"},
		{"too many extras", formType, "status=active&a=1&b=2&c=3&d=4&e=5&f=6&g=7&h=8&i=9", "", "active"},
		{"long extra name", formType, "status=active&" + strings.Repeat("n", 65) + "=1", "", "active"},
		{"extra with invalid escape", formType, "status=active&note=%zz", "", "active"},
		{"multipart duplicate extra", zulipJSType, multipartBody(field("status", "active"), field("client", "x"), field("client", "y")), "", "active"},
		{"empty name", formType, "status=active&=x", "", "active"},
		{"duplicate in body, last wins", formType, "status=active&status=idle", "", "idle"},
		{"duplicate in query, last wins", "", "", "status=idle&status=active", "active"},
		{"duplicate with empty value", formType, "status=active&ping_only=true&status", "", ""},
		{"semicolon in body", formType, "status=active;ping_only=true", "", "active;ping_only=true"},
		{"semicolon in query", "", "", "status=active;x", "active;x"},
		{"invalid percent-encoding", formType, "status=act%zzive", "", "act%zzive"},
		{"truncated percent-encoding", formType, "status=active%2", "", "active%2"},
		{"percent-encoded invalid UTF-8", formType, "status=%ff", "", "\xff"},
		{"raw invalid UTF-8", formType, "status=active&x\xff=1", "", "active"},
		{"JSON body", "application/json", `{"status":"active"}`, "", ""},
		{"JSON body, status in query", "application/json", `{"x":1}`, "status=active", "active"},
		{"text/plain body", "text/plain", "status=active", "", ""},
		{"no content type with a body", "", "status=active", "", ""},
		{"malformed content type", "application/x-www-form-urlencoded; =x", "status=active", "", ""},
		{"latin-1 charset", formType + "; charset=iso-8859-1", "status=active", "", "active"},
		{"extra media type parameter", formType + "; foo=bar", "status=active", "", "active"},
		{"too many fields", formType, "status=active" + strings.Repeat("&", maxFields), "", ""},
		{"body too large", formType, "status=active&" + strings.Repeat("a", maxBody), "", ""},
		{"JSON whitespace", formType, "status=active&ping_only=%20false", "", "active"},
		{"multipart without boundary", "multipart/form-data", zulipJSBody, "", ""},
		{"multipart with a bad boundary", "multipart/form-data; boundary=\"a\x01b\"", "", "status=active", "active"},
		{"multipart charset", zulipJSType + "; charset=latin1", zulipJSBody, "", "active"},
		{"multipart file part", zulipJSType, multipartBody(
			field("status", "active"),
			"Content-Disposition: form-data; name=\"ping_only\"; filename=\"x.txt\"\r\nContent-Type: text/plain\r\n\r\ntrue"), "", "active"},
		{"multipart empty filename", zulipJSType, multipartBody(
			"Content-Disposition: form-data; name=\"status\"; filename=\"\"\r\n\r\nactive"), "", ""},
		{"multipart transfer encoding", zulipJSType, multipartBody(
			"Content-Disposition: form-data; name=\"status\"\r\nContent-Transfer-Encoding: base64\r\n\r\nYWN0aXZl"), "", ""},
		{"multipart quoted-printable", zulipJSType, multipartBody(
			"Content-Disposition: form-data; name=\"status\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nactive"), "", ""},
		{"multipart JSON part", zulipJSType, multipartBody(
			"Content-Disposition: form-data; name=\"status\"\r\nContent-Type: application/json\r\n\r\nactive"), "", ""},
		{"multipart name with spaces", zulipJSType, multipartBody(field(" status ", "active")), "", ""},
		{"multipart RFC 2231 name", zulipJSType, multipartBody(
			"Content-Disposition: form-data; name*=UTF-8''status\r\n\r\nactive"), "", ""},
		{"multipart no name", zulipJSType, multipartBody("Content-Disposition: form-data\r\n\r\nactive"), "", ""},
		{"multipart not form-data", zulipJSType, multipartBody("Content-Disposition: attachment; name=\"status\"\r\n\r\nactive"), "", ""},
		{"multipart duplicate", zulipJSType, multipartBody(field("status", "active"), field("status", "idle")), "", "idle"},
		{"multipart invalid UTF-8", zulipJSType, multipartBody(field("status", "act\xffive")), "", "act\xffive"},
		{"multipart truncated", zulipJSType, strings.TrimSuffix(zulipJSBody, "--"+zulipJSBoundary+"--\r\n"), "", "active"},
		{"multipart garbage", zulipJSType, "status=active", "", ""},
		{"multipart preamble", zulipJSType, "preamble\r\n" + zulipJSBody, "", "active"},
		{"multipart bare LF", zulipJSType, strings.ReplaceAll(zulipJSBody, "\r\n", "\n"), "", "active"},
		{"multipart too many parts", zulipJSType, multipartBody(func() []string {
			parts := make([]string, maxParts+1)
			for i := range parts {
				parts[i] = field("x", "1")
			}
			return parts
		}()...), "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Parse(tc.contentType, []byte(tc.body), tc.query)
			if !p.Unusual {
				t.Errorf("Unusual = false; Request %+v, Err %s", p.Request, errString(p.Err))
			}
			if p.Request.Status != tc.wantStatus {
				t.Errorf("Status = %q, want %q", p.Request.Status, tc.wantStatus)
			}
		})
	}
}

// TestParseExtras: parameters the view does not take are kept, as they
// came, for a fetch to carry; the request is usual.
func TestParseExtras(t *testing.T) {
	tests := []struct {
		name              string
		contentType, body string
		query             string
		want              []Extra
		ignored           []string
	}{
		{"in the body", formType, "status=active&note=cron", "", []Extra{{Name: "note", Field: "note=cron"}}, []string{"note"}},
		{"in the query", formType, "status=active", "note=cron", []Extra{{Name: "note", Field: "note=cron", Query: true}}, []string{"note"}},
		{"kept as it came", formType, "status=active&n%6Fte=a+b%21&zz", "", []Extra{{Name: "note", Field: "n%6Fte=a+b%21"}, {Name: "zz", Field: "zz"}}, []string{"note", "zz"}},
		{"case matters in names", formType, "Status=active&status=idle", "", []Extra{{Name: "Status", Field: "Status=active"}}, []string{"Status"}},
		{"client is never listed", formType, "status=active&client=cron&b=1", "a=2", []Extra{{Name: "client", Field: "client=cron"}, {Name: "b", Field: "b=1"}, {Name: "a", Field: "a=2", Query: true}}, []string{"a", "b"}},
		{"multipart, encoded", zulipJSType, multipartBody(field("status", "active"), field("note", "a b&c")), "", []Extra{{Name: "note", Field: "note=a+b%26c"}}, []string{"note"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := Parse(tc.contentType, []byte(tc.body), tc.query)
			if p.Unusual || p.Err != nil {
				t.Fatalf("Unusual %v, Err %s", p.Unusual, errString(p.Err))
			}
			if !slices.Equal(p.Extras, tc.want) {
				t.Errorf("Extras = %+v, want %+v", p.Extras, tc.want)
			}
			if got := IgnoredNames(p.Extras); !slices.Equal(got, tc.ignored) {
				t.Errorf("IgnoredNames = %q, want %q", got, tc.ignored)
			}
		})
	}
	if p := Parse(formType, []byte("status=active&ping_only=true"), ""); p.Extras != nil {
		t.Errorf("a documented request has extras %+v", p.Extras)
	}
}

// TestParseKeyInBodyAndQuery checks that a parameter in both places is
// documented behaviour, not unusual.
func TestParseKeyInBodyAndQuery(t *testing.T) {
	p := Parse(formType, []byte("status=idle"), "status=active")
	if p.Unusual || p.Err != nil || p.Request.Status != "idle" {
		t.Errorf("got %+v", p)
	}
}

func BenchmarkParse(b *testing.B) {
	body := []byte(webAppBody)
	b.ReportAllocs()
	for b.Loop() {
		p := Parse(formType+"; charset=UTF-8", body, "")
		if p.Err != nil || p.Unusual {
			b.Fatal("rejected")
		}
	}
}

// fuzzContentTypes are the content types FuzzParse chooses from, so that
// mutated bodies keep meeting the multipart boundaries of the seeds.
var fuzzContentTypes = []string{
	formType,
	formType + "; charset=UTF-8",
	zulipJSType,
	undiciType,
	"",
	"application/json",
	"multipart/form-data",
	"text/plain; charset=utf-8",
}

func FuzzParse(f *testing.F) {
	seeds := []struct {
		ct          uint8
		body, query string
	}{
		{1, webAppBody, ""},
		{1, flutterBody, ""},
		{0, mobileBody, ""},
		{0, "status=idle&ping_only=true", ""},
		{0, "last_update_id=-1&history_limit_days=365000&ping_only=false&status=idle", ""},
		{2, zulipJSBody, ""},
		{3, undiciBody, ""},
		{2, multipartBody(field("status", "active"), field("ping_only", "true")), ""},
		{4, "", "status=active&slim_presence=true"},
		{0, "status=idle", "status=active&ping_only=true"},
		{5, `{"status":"active"}`, "status=idle"},
		{0, "status=foo", ""},
		{0, "ping_only=true", ""},
		{0, "status=active&last_update_id=abc", ""},
		{0, "status=active&last_update_id=1.5", ""},
		{0, "status=active&ping_only=1", ""},
		{0, "status=active&history_limit_days=%2005%20", ""},
		{0, "status=active&foo=1&status=idle", ""},
		{0, "status=act%zzive;x", ""},
		{6, zulipJSBody, ""},
	}
	for _, s := range seeds {
		f.Add(s.ct, []byte(s.body), s.query)
	}
	f.Fuzz(func(t *testing.T, ct uint8, body []byte, query string) {
		contentType := fuzzContentTypes[int(ct)%len(fuzzContentTypes)]
		p := Parse(contentType, body, query)
		if p.Err != nil {
			if p.Err.Msg == "" {
				t.Fatal("error without a msg")
			}
		} else if !p.Request.Active() && p.Request.Status != "idle" || p.Request.Sent&ParamStatus == 0 {
			t.Fatalf("accepted request without a valid status: %+v", p.Request)
		}
		if contentType == formType && query == "" {
			// A urlencoded body and a query string read the same.
			if q := Parse("", nil, string(body)); q.Request != p.Request || q.Unusual != p.Unusual || errString(q.Err) != errString(p.Err) {
				t.Fatalf("body and query differ:\nbody  %+v %s\nquery %+v %s", p, errString(p.Err), q, errString(q.Err))
			}
		}
		if p.Err != nil || p.Unusual {
			return
		}
		enc := p.Request.Encode()
		again := Parse(formType, []byte(enc), "")
		if again.Err != nil || again.Unusual || again.Request != p.Request {
			t.Fatalf("Encode does not round-trip:\n%+v\n%q\n%+v %s unusual=%v", p.Request, enc, again.Request, errString(again.Err), again.Unusual)
		}
		if vals, err := url.ParseQuery(enc); err != nil || vals.Encode() != enc {
			t.Fatalf("Encode %q is not canonical url.Values encoding (%v)", enc, err)
		}
	})
}
