package presence

import (
	"encoding/json"
	"math"
	"strconv"
	"testing"
)

// floatCases holds orjson 3.8 dumps(f) for f.
var floatCases = []struct {
	f      float64
	orjson string
}{
	{0.0, "0.0"},
	{math.Copysign(0, -1), "-0.0"},
	{1.0, "1.0"},
	{-1.0, "-1.0"},
	{0.1, "0.1"},
	{0.5, "0.5"},
	{1.5, "1.5"},
	{100.0, "100.0"},
	{1656958539.0, "1656958539.0"},
	{1656958539.6287155, "1656958539.6287155"},
	{1764153739.123456, "1764153739.123456"},
	{1000000000000000.0, "1000000000000000.0"},
	{9999999999999998.0, "9999999999999998.0"},
	{9007199254740992.0, "9007199254740992.0"},
	{1e+16, "1e16"},
	{1.0000000000000002e+16, "1.0000000000000002e16"},
	{1e+17, "1e17"},
	{1e+22, "1e22"},
	{1e+100, "1e100"},
	{1.2345678901234567e+20, "1.2345678901234567e20"},
	{1.2345678901234568e+17, "1.2345678901234568e17"},
	{9.223372036854776e+18, "9.223372036854776e18"},
	{0.001, "0.001"},
	{0.0001, "0.0001"},
	{0.00011, "0.00011"},
	{9.999999999999999e-05, "0.00009999999999999999"},
	{1e-05, "0.00001"},
	{1.5e-05, "0.000015"},
	{0.000123456, "0.000123456"},
	{1e-07, "1e-7"},
	{2.5e-06, "2.5e-6"},
	{5e-324, "5e-324"},
	{2.2250738585072014e-308, "2.2250738585072014e-308"},
	{1.7976931348623157e+308, "1.7976931348623157e308"},
	{-1.5e-05, "-0.000015"},
	{-1e+16, "-1e16"},
	{-123.456, "-123.456"},
	{3.141592653589793, "3.141592653589793"},
	{12345.678, "12345.678"},
	{0.3, "0.3"},
	{1.0 / 3, "0.3333333333333333"},
}

func TestAppendJSONFloat(t *testing.T) {
	for _, tc := range floatCases {
		got := string(appendJSONFloat(nil, tc.f))
		if got != tc.orjson {
			t.Errorf("appendJSONFloat(%v) = %q, want %q", tc.f, got, tc.orjson)
		}
		if back, err := strconv.ParseFloat(got, 64); err != nil || back != tc.f {
			t.Errorf("appendJSONFloat(%v) = %q reads back as %v, %v", tc.f, got, back, err)
		}
	}
	for _, f := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if got := string(appendJSONFloat(nil, f)); got != "null" {
			t.Errorf("appendJSONFloat(%v) = %q, want null", f, got)
		}
	}
}

func TestAppendJSONString(t *testing.T) {
	// Expectations are orjson.dumps output.
	tests := []struct{ in, want string }{
		{"", `""`},
		{"a@b.c", `"a@b.c"`},
		{"é@x", `"é@x"`},
		{`q"b\s`, `"q\"b\\s"`},
		{"\x00\x01\x08\t\n\x0c\r\x1f \x7f", `"\u0000\u0001\b\t\n\f\r\u001f ` + "\x7f\""},
		{"\u2028<>&/", "\"\u2028<>&/\""},
		{"😀", `"😀"`},
		{"a\xffb", "\"a\ufffdb\""},
	}
	for _, tc := range tests {
		if got := string(appendJSONString(nil, tc.in)); got != tc.want {
			t.Errorf("appendJSONString(%q) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestPingAnswer(t *testing.T) {
	if got, want := string(PingAnswer), "{\"result\":\"success\",\"msg\":\"\"}\n"; got != want {
		t.Errorf("PingAnswer = %q, want %q", got, want)
	}
}

func TestAppendModern(t *testing.T) {
	rows := []Row{
		{UserID: 10, Presence: Presence{Active: 1656958520, Idle: 1656958530}},
		{UserID: 7, Presence: Presence{Active: 1656958000, Idle: 1656958539}},
	}
	tests := []struct {
		name string
		rows []Row
		a    Envelope
		want string
	}{
		{
			name: "rows in given order",
			rows: rows,
			a:    Envelope{ServerTimestamp: 1656958539.6287155, LastUpdateID: 42},
			want: `{"result":"success","msg":"","presences":{"10":{"active_timestamp":1656958520,"idle_timestamp":1656958530},` +
				`"7":{"active_timestamp":1656958000,"idle_timestamp":1656958539}},` +
				`"server_timestamp":1656958539.6287155,"presence_last_update_id":42}` + "\n",
		},
		{
			name: "empty, integral timestamp",
			a:    Envelope{ServerTimestamp: 1656958539, LastUpdateID: -1},
			want: `{"result":"success","msg":"","presences":{},"server_timestamp":1656958539.0,"presence_last_update_id":-1}` + "\n",
		},
		{
			name: "ignored parameters last",
			rows: rows[:1],
			a:    Envelope{ServerTimestamp: 1.5, LastUpdateID: 3, Ignored: []string{"a", "b\"c"}},
			want: `{"result":"success","msg":"","presences":{"10":{"active_timestamp":1656958520,"idle_timestamp":1656958530}},` +
				`"server_timestamp":1.5,"presence_last_update_id":3,"ignored_parameters_unsupported":["a","b\"c"]}` + "\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AppendModern([]byte("prefix"), tc.rows, tc.a))
			if got != "prefix"+tc.want {
				t.Errorf("got  %s\nwant %s", got, "prefix"+tc.want)
			}
			if !json.Valid([]byte(tc.want)) {
				t.Errorf("invalid JSON")
			}
		})
	}
}

func TestAppendLegacy(t *testing.T) {
	emails := map[int64]string{10: "hamlet@zulip.com", 11: `o"thello@zulip.com`}
	email := func(id int64) string { return emails[id] }
	rows := []Row{
		// idle: active more than 70 s before idle
		{UserID: 10, Presence: Presence{Active: 1594825300, Idle: 1594825445}},
		// active: exactly 70 s
		{UserID: 11, Presence: Presence{Active: 1594825375, Idle: 1594825445}},
	}
	got := string(AppendLegacy(nil, rows, email, Envelope{ServerTimestamp: 1594825446.25, LastUpdateID: 9, Ignored: []string{"foo"}, LegacyOffset: DefaultLegacyOffset}))
	want := `{"result":"success","msg":"","presences":{` +
		`"hamlet@zulip.com":{"aggregated":{"client":"website","status":"idle","timestamp":1594825445},` +
		`"website":{"client":"website","status":"idle","timestamp":1594825445,"pushable":false}},` +
		`"o\"thello@zulip.com":{"aggregated":{"client":"website","status":"active","timestamp":1594825375},` +
		`"website":{"client":"website","status":"active","timestamp":1594825375,"pushable":false}}},` +
		`"server_timestamp":1594825446.25,"presence_last_update_id":9,"ignored_parameters_unsupported":["foo"]}` + "\n"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if !json.Valid([]byte(got)) {
		t.Errorf("invalid JSON")
	}
}

func TestAppendLegacyEmpty(t *testing.T) {
	got := string(AppendLegacy(nil, nil, nil, Envelope{ServerTimestamp: 2, LastUpdateID: -1}))
	want := `{"result":"success","msg":"","presences":{},"server_timestamp":2.0,"presence_last_update_id":-1}` + "\n"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// benchRows returns n rows with realistic ids and timestamps.
func benchRows(n int) []Row {
	rows := make([]Row, n)
	for i := range rows {
		idle := int64(1764150000 + i*37%3600)
		rows[i] = Row{UserID: int64(8 + i*3), Presence: Presence{Active: idle - int64(i%200), Idle: idle}}
	}
	return rows
}

// BenchmarkRenderSlim1500 and BenchmarkRenderLegacy1500 render 1 500 rows
// into a reused buffer, as a session's converted answers are rendered; the
// benchmark report checks them against design §9's render targets.
func BenchmarkRenderSlim1500(b *testing.B) {
	rows := benchRows(1500)
	a := Envelope{ServerTimestamp: 1764153739.6287155, LastUpdateID: 123456, LegacyOffset: DefaultLegacyOffset}
	buf := AppendModern(nil, rows, a)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendModern(buf[:0], rows, a)
	}
}

func BenchmarkRenderLegacy1500(b *testing.B) {
	rows := benchRows(1500)
	emails := make(map[int64]string, len(rows))
	for _, r := range rows {
		emails[r.UserID] = "user" + strconv.FormatInt(r.UserID, 10) + "@chat.example.com"
	}
	email := func(id int64) string { return emails[id] }
	a := Envelope{ServerTimestamp: 1764153739.6287155, LastUpdateID: 123456, LegacyOffset: DefaultLegacyOffset}
	buf := AppendLegacy(nil, rows, email, a)
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendLegacy(buf[:0], rows, email, a)
	}
}

func BenchmarkRenderSlim1500Fresh(b *testing.B) {
	rows := benchRows(1500)
	a := Envelope{ServerTimestamp: 1764153739.6287155, LastUpdateID: 123456, LegacyOffset: DefaultLegacyOffset}
	b.ReportAllocs()
	for b.Loop() {
		_ = AppendModern(nil, rows, a)
	}
}

func TestAppendInt(t *testing.T) {
	vals := []int64{0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 9999, 10000, 12345, 99999, 100000,
		1656958530, 9999999999, 10000000000, math.MaxInt64, math.MinInt64, math.MinInt64 + 1}
	for v := int64(1); v > 0 && v < math.MaxInt64/7; v = v*7 + 3 {
		vals = append(vals, v, v-1, v+1)
	}
	for _, p := range pow10[:19] {
		vals = append(vals, int64(p)-1, int64(p), int64(p)+1)
	}
	vals = append(vals, 1<<32-1, 1<<32, 1<<32+1, 1<<32+99, 1<<32+100)
	for i := range 10000 {
		vals = append(vals, int64(uint64(i)*0x9e3779b97f4a7c15))
	}
	for _, v := range vals {
		for _, n := range []int64{v, -v} {
			want := strconv.AppendInt([]byte("x"), n, 10)
			if got := appendInt([]byte("x"), n); string(got) != string(want) {
				t.Errorf("appendInt(%d) = %s, want %s", n, got, want)
			}
		}
	}
}
