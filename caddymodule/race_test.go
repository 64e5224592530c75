//go:build race

package caddymodule

// raceEnabled reports whether the race detector is on: it makes sync.Pool
// drop items, so allocation bounds do not hold under it.
const raceEnabled = true
