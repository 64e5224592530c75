package caddymodule

import "sync/atomic"

// testFaults break the handler on purpose, for the tests that check that
// shadow mode and verification notice a handler gone wrong. Nothing but
// those tests sets them.
var testFaults struct {
	// dropRow leaves one row out of every full table the handler renders.
	dropRow atomic.Bool
	// staleView makes shared mode's views take the cursor of the deltas
	// made for them but not their rows, so that they answer with rows
	// they held before.
	staleView atomic.Bool
}
