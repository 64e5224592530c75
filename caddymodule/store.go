package caddymodule

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
)

// storePool holds the stores by cache name. Caddy provisions a new
// configuration before it cleans up the old one, so a store's count goes
// 1 → 2 → 1 across a reload and its state survives.
var storePool = caddy.NewUsagePool()

// loadStore returns the store of that name, creating it if needed, and
// applies cfg to it; the caller must release it with storePool.Delete.
func loadStore(name string, cfg cache.Config) (*cache.Store, error) {
	v, loaded, err := storePool.LoadOrNew(name, func() (caddy.Destructor, error) {
		return cache.New(cfg)
	})
	if err != nil {
		return nil, err
	}
	s := v.(*cache.Store)
	if loaded {
		s.Reconfigure(cfg)
	}
	return s, nil
}
