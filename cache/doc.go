// Package cache holds the proxy's per-session state on ristretto: session
// keys (HMACs of credentials), the write gate that decides which presence
// writes must reach the Zulip server, the per-session presence snapshots
// used to convert full polls into incremental fetches, and the per-host
// user directories that name rows in legacy answers.
//
// A Store is built once per cache name and shared across Caddy config
// reloads by the caller (it implements Destruct for caddy.UsagePool); this
// package itself knows nothing of Caddy or HTTP.
package cache
