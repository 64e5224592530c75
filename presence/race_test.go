//go:build race

package presence

// raceEnabled reports whether the race detector is on: it makes sync.Pool
// drop items, so allocation counts mean nothing.
const raceEnabled = true
