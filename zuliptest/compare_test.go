package zuliptest

import (
	"net/http"
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	const direct = `{"result":"success","msg":"","presences":{"1":{"active_timestamp":10,"idle_timestamp":20},"2":{"active_timestamp":5,"idle_timestamp":6}},"server_timestamp":30.5,"presence_last_update_id":7}` + "\n"
	tests := []struct {
		name      string
		proxied   string
		status    int
		converted bool
		wantErr   string
	}{
		{name: "identical", proxied: direct},
		{name: "entries reordered", proxied: `{"result":"success","msg":"","presences":{"2":{"active_timestamp":5,"idle_timestamp":6},"1":{"active_timestamp":10,"idle_timestamp":20}},"server_timestamp":30.5,"presence_last_update_id":7}` + "\n"},
		{name: "converted cursor", converted: true, proxied: strings.Replace(direct, `:7}`, `:9}`, 1)},
		{name: "cursor differs", proxied: strings.Replace(direct, `:7}`, `:9}`, 1), wantErr: `"presence_last_update_id" = 9, want 7`},
		{name: "cursor not an integer", converted: true, proxied: strings.Replace(direct, `:7}`, `:7.0}`, 1), wantErr: "not an integer"},
		{name: "entry missing", proxied: strings.Replace(direct, `"2":{"active_timestamp":5,"idle_timestamp":6}`, ``, 1)[:0] + `{"result":"success","msg":"","presences":{"1":{"active_timestamp":10,"idle_timestamp":20}},"server_timestamp":30.5,"presence_last_update_id":7}` + "\n", wantErr: `presences lacks "2"`},
		{name: "extra entry", proxied: strings.Replace(direct, `"presences":{`, `"presences":{"3":{"active_timestamp":1,"idle_timestamp":1},`, 1), wantErr: `presences has extra "3"`},
		{name: "value differs", proxied: strings.Replace(direct, `"idle_timestamp":20`, `"idle_timestamp":21`, 1), wantErr: `presences["1"]`},
		{name: "timestamp type", proxied: strings.Replace(direct, `30.5`, `30`, 1), wantErr: `"server_timestamp" = 30, want 30.5`},
		{name: "key order", proxied: `{"msg":"","result":"success","presences":{},"server_timestamp":30.5,"presence_last_update_id":7}` + "\n", wantErr: "envelope keys"},
		{name: "extra key", proxied: strings.Replace(direct, `:7}`, `:7,"ignored_parameters_unsupported":["x"]}`, 1), wantErr: "envelope keys"},
		{name: "no newline", proxied: strings.TrimSuffix(direct, "\n") + " ", wantErr: "trailing newline"},
		{name: "status", status: 400, proxied: direct, wantErr: "status 400"},
		{name: "broken JSON", proxied: `{"result":"success","msg":"","presences":{"1":{"active_timestamp":10,"idle_timestamp":20}` + "\n", wantErr: "unbalanced value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status := tc.status
			if status == 0 {
				status = 200
			}
			err := Compare(Answer{Status: 200, Header: presenceHeader(), Body: []byte(direct)}, Answer{Status: status, Header: presenceHeader(), Body: []byte(tc.proxied)}, tc.converted)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected difference: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	for _, tc := range []struct {
		name    string
		change  func(http.Header)
		wantErr string
	}{
		{"other headers", func(h http.Header) { h.Set("Date", "x"); h.Del("Expires"); h.Set("X-RateLimit-Remaining", "1") }, ""},
		{"Content-Type", func(h http.Header) { h.Set("Content-Type", "text/html; charset=utf-8") }, `Content-Type ["text/html; charset=utf-8"], want ["application/json"]`},
		{"no Content-Type", func(h http.Header) { h.Del("Content-Type") }, `Content-Type [], want ["application/json"]`},
		{"Cache-Control", func(h http.Header) { h.Set("Cache-Control", "max-age=60") }, "Cache-Control"},
		{"Cache-Control twice", func(h http.Header) { h.Add("Cache-Control", "private") }, "Cache-Control"},
		{"Content-Language", func(h http.Header) { h.Set("Content-Language", "de") }, `Content-Language ["de"], want []`},
		{"Vary", func(h http.Header) { h.Add("Vary", "Cookie") }, "Vary"},
		{"nginx's X-Frame-Options", func(h http.Header) { h.Set("X-Frame-Options", "SAMEORIGIN") }, "X-Frame-Options"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := presenceHeader()
			tc.change(p)
			err := Compare(Answer{Status: 200, Header: presenceHeader(), Body: []byte(direct)}, Answer{Status: 200, Header: p, Body: []byte(direct)}, false)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("unexpected difference: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	errBody := `{"result":"error","msg":"Invalid status: foo","code":"BAD_REQUEST"}` + "\n"
	if err := Compare(Answer{Status: 400, Body: []byte(errBody)}, Answer{Status: 400, Body: []byte(strings.Replace(errBody, "foo", "bar", 1))}, false); err == nil {
		t.Fatal("differing error bodies compared equal")
	}
}

// presenceHeader is the header of Zulip's answer to a presence request.
func presenceHeader() http.Header {
	return http.Header{
		"Content-Type":  {"application/json"},
		"Cache-Control": {"max-age=0, no-cache, no-store, must-revalidate, private"},
		"Expires":       {"Mon, 02 Nov 2026 09:00:00 GMT"},
	}
}
