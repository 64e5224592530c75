package presence

import "testing"

func TestDropIgnored(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"result":"success","msg":"","presences":{},"server_timestamp":1.5,"ignored_parameters_unsupported":["last_update_id"]}` + "\n",
			`{"result":"success","msg":"","presences":{},"server_timestamp":1.5}` + "\n"},
		{`{"result":"success","msg":"","presences":{},"ignored_parameters_unsupported":["history_limit_days","last_update_id"]}` + "\n",
			`{"result":"success","msg":"","presences":{},"ignored_parameters_unsupported":["history_limit_days"]}` + "\n"},
		// Zulip's orjson writes U+2028 and U+2029 as they are, and so
		// must the rewritten list (encoding/json would escape them).
		{`{"result":"success","msg":"","ignored_parameters_unsupported":["a` + "\u2028" + `<b>","last_update_id"]}` + "\n",
			`{"result":"success","msg":"","ignored_parameters_unsupported":["a` + "\u2028" + `<b>"]}` + "\n"},
	}
	for _, tc := range tests {
		got, ok := DropIgnored([]byte(tc.in), "last_update_id")
		if !ok || string(got) != tc.want {
			t.Errorf("DropIgnored(%s) = %s, %v; want %s", tc.in, got, ok, tc.want)
		}
	}
	for _, in := range []string{
		`{"result":"success","msg":""}` + "\n",
		`{"result":"success","msg":"","ignored_parameters_unsupported":["foo"]}` + "\n",
	} {
		if _, ok := DropIgnored([]byte(in), "last_update_id"); ok {
			t.Errorf("DropIgnored(%s) claimed to drop a name that is not there", in)
		}
	}
}
