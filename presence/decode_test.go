package presence

import (
	"reflect"
	"strings"
	"testing"
)

const modernAnswer = `{"result":"success","msg":"","presences":{"10":{"active_timestamp":1656958520,"idle_timestamp":1656958530},` +
	`"7":{"active_timestamp":-5,"idle_timestamp":0}},"server_timestamp":1656958539.6287155,"presence_last_update_id":42}` + "\n"

func TestDecodeModern(t *testing.T) {
	twoRows := []Row{row(10, 1656958520, 1656958530), row(7, -5, 0)}
	tests := []struct {
		name string
		body string
		want Decoded
	}{
		{"modern", modernAnswer, Decoded{Rows: twoRows, ServerTimestamp: 1656958539.6287155, HasLastUpdateID: true, LastUpdateID: 42}},
		{
			"ignored parameters",
			`{"result":"success","msg":"","presences":{},"server_timestamp":1.5,"presence_last_update_id":-1,"ignored_parameters_unsupported":["foo","a\"\u00e9"]}`,
			Decoded{Rows: []Row{}, ServerTimestamp: 1.5, HasLastUpdateID: true, LastUpdateID: -1, Ignored: []string{"foo", `a"é`}},
		},
		{
			"old server without cursor",
			`{"result":"success","msg":"","presences":{"3":{"idle_timestamp":2,"active_timestamp":1}},"server_timestamp":1656958539.0,"ignored_parameters_unsupported":["last_update_id"]}`,
			Decoded{Rows: []Row{row(3, 1, 2)}, ServerTimestamp: 1656958539, Ignored: []string{"last_update_id"}},
		},
		{
			"whitespace, other key order, escaped key, integral timestamp",
			"{\n  \"presence_last_update_id\" : 9,\n\t\"presences\": { \"\\u0031\\u0030\" : { \"active_timestamp\" : 1 , \"idle_timestamp\" : 2 } },\r\n" +
				"  \"server_timestamp\": 1656958539, \"msg\": \"\", \"result\": \"success\" }\n",
			Decoded{Rows: []Row{row(10, 1, 2)}, ServerTimestamp: 1656958539, HasLastUpdateID: true, LastUpdateID: 9},
		},
		{
			"extremes",
			`{"result":"success","msg":"","presences":{"9223372036854775807":{"active_timestamp":-9223372036854775808,"idle_timestamp":9223372036854775807},"0":{"active_timestamp":0,"idle_timestamp":-0}},"server_timestamp":-1e300,"presence_last_update_id":0}`,
			Decoded{Rows: []Row{row(9223372036854775807, -9223372036854775808, 9223372036854775807), row(0, 0, 0)}, ServerTimestamp: -1e300, HasLastUpdateID: true},
		},
		{
			"empty ignored list",
			`{"result":"success","msg":"","presences":{},"server_timestamp":1.0,"ignored_parameters_unsupported":[]}`,
			Decoded{Rows: []Row{}, ServerTimestamp: 1, Ignored: []string{}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DecodeModern([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeModernErrors(t *testing.T) {
	const (
		head = `{"result":"success","msg":"","presences":`
		tail = `,"server_timestamp":1.5,"presence_last_update_id":1}`
	)
	p := func(presences string) string { return head + presences + tail }
	tests := []struct{ name, body string }{
		{"empty", ""},
		{"not an object", "[]"},
		{"error answer", `{"result":"error","msg":"Invalid status: foo","code":"BAD_REQUEST"}`},
		{"missing presences", `{"result":"success","msg":"","server_timestamp":1.5,"presence_last_update_id":1}`},
		{"missing server_timestamp", head + `{},"presence_last_update_id":1}`},
		{"missing msg", `{"result":"success","presences":{},"server_timestamp":1.5}`},
		{"missing result", `{"msg":"","presences":{},"server_timestamp":1.5}`},
		{"message", `{"result":"success","msg":"hi","presences":{},"server_timestamp":1.5}`},
		{"result not a string", `{"result":1,"msg":"","presences":{},"server_timestamp":1.5}`},
		{"legacy answer", p(`{"hamlet@zulip.com":{"aggregated":{"client":"website","status":"idle","timestamp":1594825445},` +
			`"website":{"client":"website","status":"idle","timestamp":1594825445,"pushable":false}}}`)},
		{"legacy value under an id", p(`{"10":{"aggregated":{"client":"website","status":"idle","timestamp":1}}}`)},
		{"zephyr key", head + `{},"server_timestamp":1.5,"zephyr_mirror_active":false}`},
		{"unknown key", head + `{}` + tail[:len(tail)-1] + `,"x":1}`},
		{"duplicate key", head + `{},"presences":{}` + tail},
		{"key with leading zero", p(`{"010":{"active_timestamp":1,"idle_timestamp":2}}`)},
		{"negative key", p(`{"-5":{"active_timestamp":1,"idle_timestamp":2}}`)},
		{"empty key", p(`{"":{"active_timestamp":1,"idle_timestamp":2}}`)},
		{"fractional key", p(`{"1.0":{"active_timestamp":1,"idle_timestamp":2}}`)},
		{"key overflows", p(`{"9223372036854775808":{"active_timestamp":1,"idle_timestamp":2}}`)},
		{"extra presence key", p(`{"1":{"active_timestamp":1,"idle_timestamp":2,"x":3}}`)},
		{"missing idle_timestamp", p(`{"1":{"active_timestamp":1}}`)},
		{"missing active_timestamp", p(`{"1":{"idle_timestamp":1}}`)},
		{"duplicate presence key", p(`{"1":{"active_timestamp":1,"active_timestamp":2,"idle_timestamp":2}}`)},
		{"float timestamp", p(`{"1":{"active_timestamp":1.5,"idle_timestamp":2}}`)},
		{"integral float timestamp", p(`{"1":{"active_timestamp":1.0,"idle_timestamp":2}}`)},
		{"exponent timestamp", p(`{"1":{"active_timestamp":1e3,"idle_timestamp":2}}`)},
		{"string timestamp", p(`{"1":{"active_timestamp":"1","idle_timestamp":2}}`)},
		{"null timestamp", p(`{"1":{"active_timestamp":null,"idle_timestamp":2}}`)},
		{"timestamp overflows", p(`{"1":{"active_timestamp":9223372036854775808,"idle_timestamp":2}}`)},
		{"negative timestamp overflows", p(`{"1":{"active_timestamp":-9223372036854775809,"idle_timestamp":2}}`)},
		{"leading zero timestamp", p(`{"1":{"active_timestamp":01,"idle_timestamp":2}}`)},
		{"presences not an object", p(`[]`)},
		{"presence not an object", p(`{"1":[1,2]}`)},
		{"float cursor", head + `{},"server_timestamp":1.5,"presence_last_update_id":1.5}`},
		{"string timestamp envelope", head + `{},"server_timestamp":"1.5"}`},
		{"bad number", head + `{},"server_timestamp":1.}`},
		{"huge number", head + `{},"server_timestamp":1e999}`},
		{"ignored not a list", head + `{}` + tail[:len(tail)-1] + `,"ignored_parameters_unsupported":"x"}`},
		{"ignored not strings", head + `{}` + tail[:len(tail)-1] + `,"ignored_parameters_unsupported":[1]}`},
		{"trailing comma", p(`{"1":{"active_timestamp":1,"idle_timestamp":2},}`)},
		{"trailing data", modernAnswer + "x"},
		{"two answers", modernAnswer + modernAnswer},
		{"truncated", modernAnswer[:len(modernAnswer)/2]},
		{"unterminated string", `{"result":"succ`},
		{"invalid escape", `{"result":"succ\x"}`},
		{"lone surrogate", `{"result":"\ud800"}`},
		{"reversed surrogates", `{"result":"\udc00\ud800"}`},
		{"short unicode escape", `{"result":"\u12"}`},
		{"control character", "{\"result\":\"succ\tess\"}"},
		{"invalid UTF-8", "{\"result\":\"succ\xffess\"}"},
		{"invalid UTF-8 after escape", "{\"result\":\"\\n\xff\"}"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := DecodeModern([]byte(tc.body))
			if err == nil {
				t.Fatalf("no error; got %+v", r)
			}
			if !strings.HasPrefix(err.Error(), "presence: upstream answer at byte ") {
				t.Errorf("error %q", err)
			}
			if !reflect.DeepEqual(r, Decoded{}) {
				t.Errorf("partial result %+v", r)
			}
		})
	}
}

func TestDecodeModernRoundTrip(t *testing.T) {
	rows := benchRows(400)
	a := Envelope{ServerTimestamp: 1764153739.6287155, LastUpdateID: 77, Ignored: []string{"x\n", "y"}}
	r, err := DecodeModern(AppendModern(nil, rows, a))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.Rows, rows) || r.ServerTimestamp != a.ServerTimestamp || !r.HasLastUpdateID ||
		r.LastUpdateID != a.LastUpdateID || !reflect.DeepEqual(r.Ignored, a.Ignored) {
		t.Errorf("round trip changed the answer")
	}
	if cap(r.Rows) != len(rows) {
		t.Errorf("cap(Rows) = %d, want %d", cap(r.Rows), len(rows))
	}
}

func BenchmarkDecodeModern400(b *testing.B) {
	body := AppendModern(nil, benchRows(400), Envelope{ServerTimestamp: 1764153739.6287155, LastUpdateID: 123456})
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := DecodeModern(body); err != nil {
			b.Fatal(err)
		}
	}
}

func FuzzDecodeModern(f *testing.F) {
	f.Add([]byte(modernAnswer))
	f.Add([]byte(`{"result":"success","msg":"","presences":{},"server_timestamp":1.5,"ignored_parameters_unsupported":["a\u00e9"]}`))
	f.Add([]byte(`{"result":"error","msg":"x","code":"BAD_REQUEST"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := DecodeModern(body)
		if err != nil {
			return
		}
		// What decodes renders back to an answer that decodes the same.
		a := Envelope{ServerTimestamp: r.ServerTimestamp, LastUpdateID: r.LastUpdateID, Ignored: r.Ignored}
		again, err := DecodeModern(AppendModern(nil, r.Rows, a))
		if err != nil {
			t.Fatalf("rendered answer does not decode: %v", err)
		}
		if !reflect.DeepEqual(again.Rows, r.Rows) || again.ServerTimestamp != r.ServerTimestamp || again.LastUpdateID != r.LastUpdateID {
			t.Fatalf("round trip changed %+v into %+v", r, again)
		}
	})
}
