package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves, on Caddy's admin endpoint, GET /zulip_presence/stores:
// the live state stores, their memory use and how many handlers hold
// each; and GET /zulip_presence/mismatches: the latest answers shadow mode
// or verification found to differ from the server's.
// Caddy provisions admin modules anew on every config load, so it reads the
// package-level pool rather than any one config's handlers.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.zulip_presence",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/zulip_presence/stores", Handler: caddy.AdminHandlerFunc(serveStores)},
		{Pattern: "/zulip_presence/mismatches", Handler: caddy.AdminHandlerFunc(serveMismatches)},
	}
}

// storeInfo describes one store in the admin answer.
type storeInfo struct {
	CacheName  string     `json:"cache_name"`
	UsedBytes  int64      `json:"used_bytes"`
	MaxBytes   int64      `json:"max_bytes"`
	References int        `json:"references"`
	Views      []viewInfo `json:"views"`
}

// viewInfo describes one shared-mode view of a store.
type viewInfo struct {
	Host   string `json:"host"`
	Rows   int    `json:"rows"`
	Bytes  int64  `json:"bytes"`
	Cursor int64  `json:"cursor"`
}

func serveStores(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed")}
	}
	infos := []storeInfo{}
	storePool.Range(func(key, v any) bool {
		name, _ := key.(string)
		if s, ok := v.(*cache.Store); ok {
			info := storeInfo{CacheName: name, UsedBytes: s.Used(), MaxBytes: s.MaxCost(), Views: []viewInfo{}}
			for _, v := range s.Views(time.Now()) {
				info.Views = append(info.Views, viewInfo{Host: v.Host, Rows: v.Rows, Bytes: v.Bytes, Cursor: v.Cursor})
			}
			sort.Slice(info.Views, func(i, j int) bool { return info.Views[i].Host < info.Views[j].Host })
			infos = append(infos, info)
		}
		return true
	})
	// References locks the pool, so it is asked only after Range let go.
	for i := range infos {
		infos[i].References, _ = storePool.References(infos[i].CacheName)
	}
	sort.Slice(infos, func(i, j int) bool { return infos[i].CacheName < infos[j].CacheName })
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(infos)
}

var _ caddy.AdminRouter = adminAPI{}
