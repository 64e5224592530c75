package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// The transport may still be dialing for one upstream call, reading the
// dial address from the request's variables, when the handler's next call
// writes its own: each call needs a map of its own, holding the same values.
func TestSubrequestHasItsOwnVars(t *testing.T) {
	vars := map[string]any{"client_ip": "192.0.2.7"}
	r := httptest.NewRequest(http.MethodPost, "/api/v1/users/me/presence", nil)
	r = r.WithContext(context.WithValue(r.Context(), caddyhttp.VarsCtxKey, vars))

	first := subrequest(r, http.MethodGet, "/api/v1/users/me", nil)
	second := subrequest(r, http.MethodPost, "/api/v1/users/me/presence", []byte("status=active"))
	caddyhttp.SetVar(first.Context(), "dial", "first")
	caddyhttp.SetVar(second.Context(), "dial", "second")

	if got := caddyhttp.GetVar(first.Context(), "dial"); got != "first" {
		t.Errorf("first call's dial var = %v, want first", got)
	}
	if _, ok := vars["dial"]; ok {
		t.Errorf("an upstream call wrote into the client request's vars: %v", vars)
	}
	for _, sub := range []*http.Request{first, second} {
		if got := caddyhttp.GetVar(sub.Context(), "client_ip"); got != "192.0.2.7" {
			t.Errorf("%s %s: client_ip = %v, want the client request's", sub.Method, sub.URL.Path, got)
		}
	}
}
