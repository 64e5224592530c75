package zuliptest

import (
	"bytes"
	"fmt"
	"mime/multipart"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// Expected values below come from running CPython 3.11's
// urllib.parse.parse_qsl and pydantic 2's strict Json validation.

func TestParseQuery(t *testing.T) {
	for _, tc := range []struct {
		qs   string
		want map[string][]string
	}{
		{"a=1&b=2", map[string][]string{"a": {"1"}, "b": {"2"}}},
		{"a", map[string][]string{"a": {""}}},
		{"a=", map[string][]string{"a": {""}}},
		{"=x", map[string][]string{"": {"x"}}},
		{"a=1&&b=2", map[string][]string{"a": {"1"}, "b": {"2"}}},
		{"a+b=c+d", map[string][]string{"a b": {"c d"}}},
		{"a=%41%42", map[string][]string{"a": {"AB"}}},
		{"a=%zz", map[string][]string{"a": {"%zz"}}},
		{"a=%4", map[string][]string{"a": {"%4"}}},
		{"a=%C3%A9", map[string][]string{"a": {"é"}}},
		{"a=%C3", map[string][]string{"a": {"\ufffd"}}},
		{"a=%E2%82%41", map[string][]string{"a": {"\ufffdA"}}},
		{"a=%E2%82", map[string][]string{"a": {"\ufffd"}}},
		{"a=%ff%fe", map[string][]string{"a": {"\ufffd\ufffd"}}},
		{"a=1;b=2", map[string][]string{"a": {"1;b=2"}}},
		{"a=x%20y+z", map[string][]string{"a": {"x y z"}}},
		{"%61=1", map[string][]string{"a": {"1"}}},
		{"a==b", map[string][]string{"a": {"=b"}}},
		{"a=é%C3%A9", map[string][]string{"a": {"éé"}}},
		{"a=%C3é", map[string][]string{"a": {"\ufffdé"}}},
		{"a=1&a=2", map[string][]string{"a": {"1", "2"}}},
	} {
		got, err := parseQuery(tc.qs)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseQuery(%q) = %q, %v; want %q", tc.qs, got, err, tc.want)
		}
	}
	if got, _ := parseQuery("&&"); len(got) != 0 {
		t.Errorf("parseQuery(&&) = %q", got)
	}
	if _, err := parseQuery(strings.Repeat("a=1&", 1000)); err == nil {
		t.Error("more than 1000 fields accepted")
	}
}

func TestLatin1Fallback(t *testing.T) {
	if got := decodeLatin1Fallback([]byte("status=\xe9")); got != "status=é" {
		t.Errorf("got %q", got)
	}
}

func TestJSONParams(t *testing.T) {
	deep := func(n int) string { return strings.Repeat("[", n) + "1" + strings.Repeat("]", n) }
	ints := map[string][]string{
		"": {"5", "-1", "0", "-0", " 5 ", "\t5\n", "123456789012345678901234567890", strings.Repeat("9", 4300)},
		"is not valid JSON": {
			"05", "abc", "", "+5", "5 6", "-", "0x10", "1.", ".5", "1e", "-01", "[1,]", `{"a":1,}`,
			`"\ud800"`, `"\udc00"`, `"\ud83d\u0041"`, "inf", "nan", "-NaN", "\"\x01\"", `"\x"`, "{1:2}",
			"Infinityx", "true1", "\u00a05", "\ufeff5", strings.Repeat("9", 4301), "-" + strings.Repeat("9", 4300), deep(201),
		},
		"is not an integer": {
			"1.5", "1e3", "1E2", `"5"`, "true", "null", "NaN", "Infinity", "-Infinity", "[1]", "{}", "1.0",
			"[NaN]", "\"\x7f\"", "1e999", `{"a" : [1 , 2]}`, `"\uD83D\uDE00"`, deep(200),
		},
	}
	for want, raws := range ints {
		for _, raw := range raws {
			_, err := parseJSONInt("last_update_id", raw)
			if got := errMsg(err); got != strings.TrimSpace("last_update_id "+want) && !(want == "" && err == nil) {
				t.Errorf("Json[int] %.40q: %q, want %q", raw, got, want)
			}
		}
	}
	bools := map[string]string{
		"true": "", "false": "", " true ": "",
		"True": "is not valid JSON", "tru": "is not valid JSON", "": "is not valid JSON",
		"1": "is not a boolean", "0": "is not a boolean", "null": "is not a boolean",
		`"true"`: "is not a boolean", "NaN": "is not a boolean",
	}
	for raw, want := range bools {
		_, err := parseJSONBool("ping_only", raw)
		if got := errMsg(err); !(want == "" && err == nil) && got != "ping_only "+want {
			t.Errorf("Json[bool] %q: %q, want %q", raw, got, want)
		}
	}
	if n, _ := parseJSONInt("x", "-0"); n.text != "0" || !n.fits || n.v != 0 {
		t.Errorf("-0 parsed as %+v", n)
	}
}

func errMsg(err *apiError) string {
	if err == nil {
		return ""
	}
	return err.msg
}

func TestParamParsingOverHTTP(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	for _, tc := range []struct {
		name, query, body string
		status            int
		msg               string
	}{
		{"first failure in signature order", "", "history_limit_days=x&last_update_id=y&status=foo", 400, "history_limit_days is not valid JSON"},
		{"last_update_id before booleans", "", "new_user_input=2&last_update_id=1.5&status=idle", 400, "last_update_id is not an integer"},
		{"new_user_input before ping_only", "", "ping_only=1&new_user_input=2&status=idle", 400, "new_user_input is not a boolean"},
		{"slim_presence before missing status", "", "slim_presence=yes", 400, "slim_presence is not valid JSON"},
		{"booleans before the status value", "", "status=foo&ping_only=1", 400, "ping_only is not a boolean"},
		{"quoted int", "", `status=idle&last_update_id="5"`, 400, "last_update_id is not an integer"},
		{"null optional int", "", "status=idle&history_limit_days=null", 400, "history_limit_days is not an integer"},
		{"status is case-sensitive", "", "status=Active", 400, "Invalid status: Active"},
		{"empty status", "", "status=", 400, "Invalid status: "},
		{"query string works", "status=idle", "", 200, ""},
		{"body wins over query", "status=foo", "status=idle", 200, ""},
		{"query fills what the body lacks", "ping_only=1", "status=idle", 400, "ping_only is not a boolean"},
		{"last duplicate wins", "", "status=foo&status=idle", 200, ""},
		{"first duplicate loses", "", "status=idle&status=foo", 400, "Invalid status: foo"},
		{"history_limit_days beyond timedelta", "", "status=idle&history_limit_days=1000000000", 500, "Internal server error"},
		{"history_limit_days before year 1", "", "status=idle&history_limit_days=800000", 500, "Internal server error"},
		{"history_limit_days after year 9999", "", "status=idle&history_limit_days=-3000000", 500, "Internal server error"},
		{"huge history_limit_days", "", "status=idle&history_limit_days=99999999999999999999", 500, "Internal server error"},
		{"huge ping is fine", "", "status=idle&ping_only=true&history_limit_days=99999999999999999999", 200, ""},
		{"echo beyond orjson's range", "", "status=idle&last_update_id=" + strings.Repeat("9", 30), 500, "Internal server error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := "/api/v1/users/me/presence"
			if tc.query != "" {
				path += "?" + tc.query
			}
			r := e.request("POST", path, tc.body, "Authorization: "+e.rm.BasicAuth(c.hamlet.ID))
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.msg != "" && !strings.Contains(r.body, fmt.Sprintf(`"msg":%q`, tc.msg)) {
				t.Fatalf("body %s, want msg %q", r.body, tc.msg)
			}
		})
	}

	t.Run("missing status body", func(t *testing.T) {
		r := e.post(c.hamlet, "")
		want := `{"result":"error","msg":"Missing 'status' argument","var_name":"status","code":"REQUEST_VARIABLE_MISSING"}` + "\n"
		if r.status != 400 || r.body != want {
			t.Fatalf("%d %q", r.status, r.body)
		}
	})

	t.Run("JSON bodies are not parsed", func(t *testing.T) {
		r := e.request("POST", "/api/v1/users/me/presence", `{"status":"idle"}`,
			"Authorization: "+e.rm.BasicAuth(c.hamlet.ID), "Content-Type: application/json")
		if r.status != 400 || !strings.Contains(r.body, "Missing 'status' argument") {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})

	t.Run("multipart bodies are parsed", func(t *testing.T) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		mw.WriteField("status", "idle")
		mw.WriteField("slim_presence", "true")
		fw, _ := mw.CreateFormFile("extra", "f.txt")
		fw.Write([]byte("file content"))
		mw.Close()
		r := e.request("POST", "/api/v1/users/me/presence", buf.String(),
			"Authorization: "+e.rm.BasicAuth(c.hamlet.ID), "Content-Type: "+mw.FormDataContentType())
		body := r.mustJSON(t)
		if _, slim := body["presences"].(map[string]any)[id(c.hamlet)]; !slim || body["ignored_parameters_unsupported"] != nil {
			t.Fatalf("%s", r.body)
		}
	})

	t.Run("huge last_update_id within orjson's range is echoed", func(t *testing.T) {
		r := e.post(c.hamlet, "status=idle&last_update_id=18446744073709551615")
		if got := r.lastUpdateID(t); got != "18446744073709551615" || len(r.presences(t)) != 0 {
			t.Fatalf("%s", r.body)
		}
		r = e.post(c.hamlet, "status=idle&last_update_id=-99999999999999999999")
		if len(r.presences(t)) == 0 {
			t.Fatalf("a hugely negative cursor returned no rows: %s", r.body)
		}
	})

	t.Run("every documented name is processed", func(t *testing.T) {
		r := e.post(c.hamlet, "status=idle&ping_only=true&new_user_input=false&slim_presence=true&last_update_id=3&history_limit_days=2&zz=1&method=POST&a=")
		want := `{"result":"success","msg":"","ignored_parameters_unsupported":["a","method","zz"]}` + "\n"
		if r.body != want {
			t.Fatalf("got %q, want %q", r.body, want)
		}
	})
}

func TestMultipartOddities(t *testing.T) {
	e := newEnv(t)
	c := e.newCast()
	auth := "Authorization: " + e.rm.BasicAuth(c.hamlet.ID)
	body := "--XX\r\nContent-Disposition: form-data; name=\"status\"\r\nContent-Transfer-Encoding: base64\r\n\r\naWRsZQ==\r\n--XX--\r\n"
	if r := e.request("POST", "/api/v1/users/me/presence", body, auth, "Content-Type: multipart/form-data; boundary=XX"); r.status != 200 {
		t.Errorf("base64 field: %d %s", r.status, r.body)
	}
	r := e.request("POST", "/api/v1/users/me/presence", "garbage", auth, "Content-Type: multipart/form-data")
	if r.status != http.StatusInternalServerError || r.body != "{\"result\":\"error\",\"msg\":\"Internal server error\"}\n" {
		t.Errorf("no boundary: %d %q", r.status, r.body)
	}
}
