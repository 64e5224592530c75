package caddymodule

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestSharedStoreSizesMustAgree: two handlers of one configuration that
// share a cache_name with different cache_sizes fail at provision, naming
// both; a reload (a new configuration) may change the size.
func TestSharedStoreSizesMustAgree(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	name := t.Name()
	first := &Handler{CacheName: name, CacheSize: 8 << 20}
	if err := first.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer first.Cleanup()
	same := &Handler{CacheName: name, CacheSize: 8 << 20}
	if err := same.Provision(ctx); err != nil {
		t.Fatalf("a second handler with the same size: %v", err)
	}
	defer same.Cleanup()
	other := &Handler{CacheName: name, CacheSize: 16 << 20}
	err := other.Provision(ctx)
	if err == nil {
		other.Cleanup()
		t.Fatal("two sizes for one store in one configuration were accepted")
	}
	for _, want := range []string{name, "8388608", "16777216"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not name %s", err, want)
		}
	}
	reload, cancelReload := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancelReload()
	resized := &Handler{CacheName: name, CacheSize: 16 << 20}
	if err := resized.Provision(reload); err != nil {
		t.Fatalf("a reload changing the size: %v", err)
	}
	defer resized.Cleanup()
	if got := resized.store.MaxCost(); got != 16<<20 {
		t.Fatalf("store budget %d after the reload, want %d", got, 16<<20)
	}
}
