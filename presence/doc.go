// Package presence is Zulip's presence protocol (POST /users/me/presence),
// pure and free of I/O: strict parameter parsing exactly as the Zulip server
// does it, request classification, the per-session snapshot of user presence
// rows, delta merging, the history-window filter, legacy status derivation
// and rendering of answers byte for byte as Zulip writes them.
//
// It imports only the standard library; it knows nothing of HTTP servers,
// Caddy or caches, so the proxy and the benchmark can both build on it.
package presence
