package caddysim

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	// The adapt test puts zulip_sim in front of reverse_proxy.
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, tc := range []struct {
		input   string
		want    Handler
		wantErr string
	}{
		{input: "zulip_sim", want: Handler{}},
		{input: "zulip_sim {\n}", want: Handler{}},
		{input: "zulip_sim {\n users 500\n online 60\n seed 42\n}", want: Handler{Users: 500, Online: 60, Seed: 42}},
		{input: "zulip_sim {\n users -1\n}", want: Handler{Users: -1}},
		{input: "zulip_sim extra", wantErr: "wrong argument count"},
		{input: "zulip_sim {\n userz 5\n}", wantErr: "unrecognized zulip_sim subdirective 'userz'"},
		{input: "zulip_sim {\n users\n}", wantErr: "wrong argument count"},
		{input: "zulip_sim {\n users 1 2\n}", wantErr: "wrong argument count"},
		{input: "zulip_sim {\n seed x\n}", wantErr: "invalid syntax"},
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(tc.input))
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: error %v, want %q", tc.input, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%q: %v", tc.input, err)
		case h.Users != tc.want.Users || h.Online != tc.want.Online || h.Seed != tc.want.Seed:
			t.Errorf("%q: %+v, want %+v", tc.input, h, tc.want)
		}
	}
}

func TestCaddyfileAdapt(t *testing.T) {
	input := ":8080 {\n\tzulip_sim {\n\t\tusers 30\n\t\tonline 5\n\t}\n\treverse_proxy localhost:9\n}\n"
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("no caddyfile adapter")
	}
	out, warnings, err := adapter.Adapt([]byte(input), nil)
	if err != nil || len(warnings) > 0 {
		t.Fatalf("adapt: %v %v", err, warnings)
	}
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []map[string]any `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	var handlers []string
	for _, srv := range cfg.Apps.HTTP.Servers {
		for _, rt := range srv.Routes {
			for _, h := range rt.Handle {
				handlers = append(handlers, h["handler"].(string))
				if h["handler"] == "zulip_sim" && (h["users"] != float64(30) || h["online"] != float64(5) || h["seed"] != nil) {
					t.Errorf("handler JSON %v", h)
				}
			}
		}
	}
	if !slices.Equal(handlers, []string{"zulip_sim", "reverse_proxy"}) {
		t.Fatalf("handlers %v in %s", handlers, out)
	}
}

func TestHandlerLifecycle(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Users: 100}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if h.Users != 100 || h.Online != zuliptest.DefaultDemoOnline || h.Seed != zuliptest.DefaultDemoSeed {
		t.Fatalf("defaults %+v", h)
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/api/v1/users/me", nil)
	req.SetBasicAuth(zuliptest.DemoEmail, zuliptest.DemoAPIKey)
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error {
		t.Fatal("zulip_sim called the next handler")
		return nil
	})
	if err := h.ServeHTTP(w, req, next); err != nil || w.Code != 200 || !strings.Contains(w.Body.String(), zuliptest.DemoEmail) {
		t.Fatalf("ServeHTTP: %v %d %s", err, w.Code, w.Body)
	}
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.done:
	default:
		t.Fatal("activity still running after Cleanup")
	}
	if err := h.Cleanup(); err != nil {
		t.Fatal("second Cleanup:", err)
	}
}

func TestHandlerSmallRealmDefaults(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Users: 10}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	if h.Online != 10 {
		t.Fatalf("online %d for 10 users", h.Online)
	}
}

func TestHandlerValidation(t *testing.T) {
	for _, h := range []Handler{
		{Users: -1},
		{Online: -1},
		{Seed: -1},
		{Users: 10, Online: 11},
		{Online: 201},
	} {
		if err := h.Validate(); err == nil {
			t.Errorf("%+v validated", h)
		}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		if err := h.Provision(ctx); err == nil {
			t.Errorf("%+v provisioned", h)
		}
		if err := h.Cleanup(); err != nil {
			t.Errorf("Cleanup after a failed Provision: %v", err)
		}
		cancel()
	}
	var never Handler
	if err := never.Cleanup(); err != nil {
		t.Fatal("Cleanup without Provision:", err)
	}
	w := httptest.NewRecorder()
	if err := never.ServeHTTP(w, httptest.NewRequest("GET", "/", nil), nil); err == nil {
		t.Fatal("an unprovisioned handler served")
	}
}

func TestCaddyContextCancelStopsActivity(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	h := &Handler{Users: 5}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-h.done
	if err := h.Cleanup(); err != nil {
		t.Fatal(err)
	}
}

func TestModuleRegistered(t *testing.T) {
	info, err := caddy.GetModule("http.handlers.zulip_sim")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := info.New().(*Handler); !ok {
		t.Fatalf("New returns %T", info.New())
	}
}
