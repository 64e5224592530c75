package cache

import (
	"math/rand/v2"
	"testing"
	"time"
)

// zulipRow is Zulip's own write rule (zerver/actions/presence.py) and its
// invisible mode (zerver/actions/user_settings.py), the reference the
// mirror is checked against.
type zulipRow struct {
	connected, active time.Time // zero: NULL
	invisible         bool
}

func (z *zulipRow) write(t time.Time, active bool, window time.Duration) (changed bool) {
	if z.invisible {
		return false
	}
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

// setInvisible is do_change_user_setting for presence_enabled: turning it
// off backdates a recent row by 265 s, turning it on writes the row now.
func (z *zulipRow) setInvisible(on bool, now time.Time) {
	z.invisible = on
	if !on {
		z.connected, z.active = now, now
		return
	}
	b := now.Add(-265 * time.Second)
	if z.connected.After(b) {
		z.connected = b
	}
	if z.active.After(b) {
		z.active = b
	}
}

// TestRowNeverHidesAWrite drives random writes of a user: some through the
// proxy, some by writers it never sees (another instance, a client going
// straight to Zulip), invisible mode toggled now and then, and the row
// read from the server whenever the mirror asks to. Before each write it
// checks that the mirror never calls quiet a write Zulip would make, and
// that it still follows the row: most writes Zulip ignores are found
// quiet. The server's clock runs skew ahead of the proxy's.
func TestRowNeverHidesAWrite(t *testing.T) {
	for seed := range uint64(60) {
		rng := rand.New(rand.NewPCG(seed, seed))
		skew := time.Duration(rng.IntN(121)-60) * time.Second
		var z zulipRow
		// A user who joined just now, told to the minute as Zulip 10.0
		// and later send it, or long ago, told to the microsecond: a
		// NULL time reads as date_joined, which must bound nothing.
		joined, told, precision := at(-1e6), at(-1e6), time.Microsecond
		if rng.IntN(2) == 0 {
			joined = at(-float64(rng.IntN(60)) - rng.Float64())
			told, precision = joined.Truncate(time.Minute), time.Minute
		}
		if rng.IntN(2) == 0 { // a row from before the proxy started
			z.connected = at(-float64(rng.IntN(300)))
			z.active = z.connected.Add(-time.Duration(rng.IntN(300)) * time.Second)
		}
		row := &RowMirror{}
		row.SetUser(1, told, precision)
		now, quiet, noops := 0.0, 0, 0
		for range 400 {
			now += float64(rng.IntN(40)) + rng.Float64()
			server := at(now).Add(skew)
			switch rng.IntN(20) {
			case 0:
				z.write(server, rng.IntN(2) == 0, window) // unseen writer
			case 1:
				z.setInvisible(!z.invisible, server)
			}
			w := Write{Active: rng.IntN(3) > 0}
			if row.NeedsRead(at(now), window) {
				row.StartRead()
				if z.connected.IsZero() {
					row.ReadNoRow()
				} else {
					row.ReadRow(timestampOrJoined(z.active, joined), z.connected.Unix())
				}
			}
			before := z
			changed := z.write(server, w.Active, window)
			// While invisible every write is a no-op the mirror cannot
			// see: the server shows the backdated row.
			visibleNoop := !changed && !z.invisible
			if visibleNoop {
				noops++
			}
			if row.WriteIsNoOp(server, w, window) {
				if visibleNoop {
					quiet++
				}
				if changed {
					t.Fatalf("seed %d at %.3f s: the mirror called quiet a write Zulip makes (row %+v, mirror %+v)", seed, now, before, row)
				}
				continue // answered locally: the server never sees it
			}
			row.Wrote()
		}
		if quiet < noops*3/4 {
			t.Errorf("seed %d: only %d of %d no-op writes were found quiet", seed, quiet, noops)
		}
	}
}

// timestampOrJoined is what Zulip's API shows for a stored time: its Unix
// seconds, or date_joined where it is NULL.
func timestampOrJoined(t, joined time.Time) int64 {
	if t.IsZero() {
		return joined.Unix()
	}
	return t.Unix()
}

// TestRowLowerBounds: a value the server reports bounds the stored time
// from below, to the second; date_joined bounds nothing, and neither does
// any value while date_joined is unknown.
func TestRowLowerBounds(t *testing.T) {
	row := &RowMirror{}
	row.ReadRow(1000, 1000)
	if row.WriteIsNoOp(time.Unix(1010, 0), Write{}, window) {
		t.Fatal("a value was trusted before date_joined was known")
	}
	row.SetUser(7, time.Unix(500, 0), time.Microsecond)
	row.ReadRow(500, 1000)
	switch {
	case !row.WriteIsNoOp(time.Unix(1055, 0), Write{}, window):
		t.Fatal("a row stored at 1000 is not quiet at 1055")
	case row.WriteIsNoOp(time.Unix(1055, 1), Write{}, window):
		t.Fatal("a row stored at 1000.0 was called quiet after 1055")
	case row.WriteIsNoOp(time.Unix(1010, 0), Write{Active: true}, window):
		t.Fatal("date_joined shown for a NULL last_active_time was taken for a write")
	}
	row.SawRow(900, 900) // an older answer never lowers a bound
	if !row.WriteIsNoOp(time.Unix(1050, 0), Write{}, window) {
		t.Fatal("an older answer lowered the bound")
	}
}

func TestRowNeedsRead(t *testing.T) {
	row := &RowMirror{}
	if !row.NeedsRead(at(0), window) {
		t.Fatal("a row never read needs no read")
	}
	row.StartRead()
	row.FailRead(at(0))
	if row.NeedsRead(at(30), window) || !row.NeedsRead(at(56), window) {
		t.Fatal("a failed read must be retried after a window, not before")
	}
	row.StartRead()
	row.ReadNoRow()
	if row.NeedsRead(at(57), window) {
		t.Fatal("a row just read needs another read")
	}
	row.Wrote()
	if !row.NeedsRead(at(58), window) {
		t.Fatal("a write since the read did not make the row stale")
	}
}

// TestRowJoinedToTheMinute: Zulip 10.0 and later send date_joined to the
// minute, so any second of that minute may be the stand-in for a NULL
// time, and none of them bounds anything; the next minute does.
func TestRowJoinedToTheMinute(t *testing.T) {
	row := &RowMirror{}
	row.SetUser(7, time.Unix(600, 0), time.Minute) // joined in [600, 660)
	row.ReadRow(659, 700)
	switch {
	case row.WriteIsNoOp(time.Unix(700, 0), Write{Active: true}, window):
		t.Fatal("a second of date_joined's minute was taken for a stored last_active_time")
	case !row.WriteIsNoOp(time.Unix(700, 0), Write{}, window):
		t.Fatal("idle_timestamp 700 is no date_joined, yet bounds nothing")
	}
	row.ReadRow(660, 700)
	if !row.WriteIsNoOp(time.Unix(700, 0), Write{Active: true}, window) {
		t.Fatal("active_timestamp 660, past date_joined's minute, bounds nothing")
	}
}

// TestRowLegacyRead: the legacy shape's "active" timestamp bounds
// last_active_time, and last_connected_time only once a write was
// accepted (before, it may be NULL); "idle" bounds last_connected_time.
func TestRowLegacyRead(t *testing.T) {
	row := &RowMirror{}
	row.SetUser(7, time.Unix(100, 0), time.Minute)
	row.ObserveLegacy(true, 1000)
	switch {
	case row.NeedsRead(time.Unix(1001, 0), window):
		t.Fatal("a legacy read was not recorded as a read")
	case row.WriteIsNoOp(time.Unix(1010, 0), Write{}, window):
		t.Fatal("an active legacy read bounded a last_connected_time that may be NULL")
	}
	row.Wrote()
	row.ObserveLegacy(true, 1000)
	if !row.WriteIsNoOp(time.Unix(1010, 0), Write{Active: true}, window) {
		t.Fatal("an active legacy read after an accepted write bounds nothing")
	}
	idle := &RowMirror{}
	idle.SetUser(7, time.Unix(100, 0), time.Minute)
	idle.ObserveLegacy(false, 1000)
	switch {
	case !idle.WriteIsNoOp(time.Unix(1010, 0), Write{}, window):
		t.Fatal("an idle legacy read does not bound last_connected_time")
	case idle.WriteIsNoOp(time.Unix(1010, 0), Write{Active: true}, window):
		t.Fatal("an idle legacy read bounded last_active_time")
	}
	joined := &RowMirror{}
	joined.SetUser(7, time.Unix(960, 0), time.Minute)
	joined.Wrote()
	joined.ObserveLegacy(true, 1000) // date_joined, standing in for NULL
	if joined.WriteIsNoOp(time.Unix(1010, 0), Write{}, window) {
		t.Fatal("a legacy timestamp in date_joined's minute bounded the row")
	}
}
