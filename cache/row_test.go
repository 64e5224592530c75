package cache

import (
	"math/rand/v2"
	"testing"
	"time"
)

// zulipRow is Zulip's own write rule (zerver/actions/presence.py), the
// reference the mirror is checked against.
type zulipRow struct {
	connected, active time.Time // zero: NULL
}

func (z *zulipRow) write(t time.Time, active bool, window time.Duration) (changed bool) {
	if z.connected.IsZero() || t.Sub(z.connected) > window {
		z.connected, changed = t, true
	}
	if active && (z.active.IsZero() || t.Sub(z.active) > window) {
		z.active, changed = t, true
		if z.connected.Before(t) {
			z.connected = t
		}
	}
	return changed
}

// TestRowNeverHidesAWrite drives random writes of several sessions of one
// user (some failing, some whose outcome is unknown), reading the row from
// the server whenever the mirror asks to. Before each write it checks that
// the mirror never calls quiet a write Zulip would make, and that it does
// follow the row: most writes Zulip ignores are found quiet.
func TestRowNeverHidesAWrite(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, seed))
		var z zulipRow
		if rng.IntN(2) == 0 { // a row from before the proxy started
			z.connected = at(-float64(rng.IntN(300)))
			z.active = z.connected.Add(-time.Duration(rng.IntN(300)) * time.Second)
		}
		row := newRow(at(0))
		row.SetUser(1, at(-1e6))
		now, quiet, noops := 0.0, 0, 0
		for range 400 {
			now += float64(rng.IntN(40)) + rng.Float64()
			w := Write{Active: rng.IntN(3) > 0}
			if row.NeedsLearning(at(now), window) {
				row.Learn(at(now), true, !z.connected.IsZero(), z.active.Unix(), z.connected.Unix())
			}
			before := z
			changed := z.write(at(now), w.Active, window)
			if !changed {
				noops++
			}
			if row.quiet(at(now), w, window) {
				quiet++
				if changed {
					t.Fatalf("seed %d at %.3f s: the mirror called quiet a write Zulip makes (row %+v, mirror %+v)", seed, now, before, row)
				}
				continue // answered locally: the server never sees it
			}
			switch rng.IntN(10) {
			case 0: // a 5xx after the write
				row.Unsure(at(now))
			case 1: // refused before writing
				z = before
				row.Unsure(at(now))
			default:
				row.confirm(at(now), w, window)
			}
		}
		if quiet < noops*3/4 {
			t.Errorf("seed %d: only %d of %d no-op writes were found quiet", seed, quiet, noops)
		}
	}
}
