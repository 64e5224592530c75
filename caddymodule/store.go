package caddymodule

import (
	"fmt"
	"sync"

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

// storeSizes remembers, by cache name, the cache_size the configuration
// being provisioned gave it first, so that two handlers of one
// configuration cannot ask one store for two budgets. A later
// configuration (a reload) may change it.
var storeSizes = struct {
	sync.Mutex
	byName map[string]storeSize
}{byName: map[string]storeSize{}}

type storeSize struct {
	config <-chan struct{} // the Done channel of the configuration's context
	size   int64
}

// claimStoreSize records that a handler of the configuration whose
// context is done by config uses store name with size bytes, and fails if
// another handler of that configuration gave it another size.
func claimStoreSize(name string, size int64, config <-chan struct{}) error {
	storeSizes.Lock()
	defer storeSizes.Unlock()
	if prev, ok := storeSizes.byName[name]; ok && prev.config == config && prev.size != size {
		return fmt.Errorf("handlers sharing cache_name %q ask for cache_size %d and %d bytes: give them one size, or different names", name, prev.size, size)
	}
	storeSizes.byName[name] = storeSize{config: config, size: size}
	return nil
}
