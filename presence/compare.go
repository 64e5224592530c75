package presence

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
)

// Difference is one way the handler's answer to a presence request differs
// from the server's answer to the same request. It never holds a whole
// body: only the key that differs and the values compared there.
type Difference struct {
	// What is "body" (not both JSON success objects), an envelope key
	// such as "ignored_parameters_unsupported", or "row".
	What string
	// Key is the row's key in presences, for rows: a user id, or the
	// email of a legacy answer.
	Key string
	// Ours and Theirs are the two values, shortened; "absent" when one
	// side has no such key.
	Ours, Theirs string
}

// String describes the difference on one line.
func (d Difference) String() string {
	if d.Key != "" {
		return fmt.Sprintf("%s %s: ours %s, server's %s", d.What, d.Key, d.Ours, d.Theirs)
	}
	return fmt.Sprintf("%s: ours %s, server's %s", d.What, d.Ours, d.Theirs)
}

// CompareOptions are what two answers to one request, made at two moments,
// may differ in under the handler's fidelity contract.
type CompareOptions struct {
	// Converted allows presence_last_update_id to differ: a converted
	// answer carries the snapshot's cursor, an upper bound of the ids of
	// its rows.
	Converted bool
	// MayDiffer reports whether the row under key may have changed
	// between the two answers; nil for none.
	MayDiffer func(key string) bool
	// LegacyOffset is the server's
	// PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS: Zulip compares
	// microseconds, the handler whole seconds, so a legacy status may
	// differ within a second of it.
	LegacyOffset int64
	// Days is the answer's history window, for the same rounding at its
	// edge; 0 for an incremental answer, which has none.
	Days int64
	// Synced is the server_timestamp of the full fetch the handler's rows
	// were built from; 0 if there is none. Deactivation, reactivation,
	// invisible mode and a guest's visibility take no update id, so no
	// delta tells of them (contract allowance 1). With Synced known, a
	// row only the handler's answer holds may be such a change, and so
	// may a row only the server's holds whose times are all more than a
	// second before Synced: a row written since would have reached the
	// handler with its new id.
	Synced float64
}

// maxShown is how much of a differing value a Difference keeps.
const maxShown = 160

// CompareAnswers returns how ours differs from theirs beyond what opts
// allows. server_timestamp is never compared (the answers come from two
// exchanges), nor the order of keys.
func CompareAnswers(ours, theirs []byte, opts CompareOptions) []Difference {
	var o, t map[string]json.RawMessage
	if json.Unmarshal(ours, &o) != nil || json.Unmarshal(theirs, &t) != nil {
		if bytes.Equal(ours, theirs) {
			return nil
		}
		return []Difference{{What: "body", Ours: shorten(ours), Theirs: shorten(theirs)}}
	}
	var diffs []Difference
	edge := windowEdge(o["server_timestamp"], t["server_timestamp"], opts.Days)
	for _, k := range unionKeys(o, t) {
		switch k {
		case "server_timestamp":
		case "presences":
			diffs = append(diffs, compareRows(o[k], t[k], opts, edge)...)
		case "presence_last_update_id":
			if !opts.Converted || !isInt(o[k]) || !isInt(t[k]) {
				diffs = appendIfDiffer(diffs, k, "", o[k], t[k])
			}
		default:
			diffs = appendIfDiffer(diffs, k, "", o[k], t[k])
		}
	}
	return diffs
}

// edgeRange is the span of idle_timestamp values that may sit on either
// side of a history window's edge in one of two answers: the two answers'
// cutoffs, widened by a second for rounding. Empty when there is no window.
type edgeRange struct{ lo, hi float64 }

func windowEdge(ours, theirs json.RawMessage, days int64) edgeRange {
	var o, t float64
	if days <= 0 || json.Unmarshal(ours, &o) != nil || json.Unmarshal(theirs, &t) != nil {
		return edgeRange{lo: 1, hi: 0}
	}
	width := float64(days) * secondsPerDay
	return edgeRange{lo: min(o, t) - width - 1, hi: max(o, t) - width + 1}
}

// holds reports whether an entry present in one answer only may have
// crossed the window's edge between the two: its idle_timestamp (for a
// legacy entry, somewhere in [timestamp, timestamp+offset+1]) lies at
// the edge.
func (e edgeRange) holds(entry json.RawMessage, offset int64) bool {
	if e.lo > e.hi || entry == nil {
		return false
	}
	var m struct {
		Idle    *int64 `json:"idle_timestamp"`
		Website *struct {
			Timestamp int64 `json:"timestamp"`
		} `json:"website"`
	}
	if json.Unmarshal(entry, &m) != nil {
		return false
	}
	switch {
	case m.Idle != nil:
		return float64(*m.Idle) >= e.lo && float64(*m.Idle) <= e.hi
	case m.Website != nil:
		ts := float64(m.Website.Timestamp)
		return ts <= e.hi && ts+float64(offset)+1 >= e.lo
	}
	return false
}

func compareRows(ours, theirs json.RawMessage, opts CompareOptions, edge edgeRange) []Difference {
	var o, t map[string]json.RawMessage
	if json.Unmarshal(ours, &o) != nil || json.Unmarshal(theirs, &t) != nil {
		return appendIfDiffer(nil, "presences", "", ours, theirs)
	}
	var diffs []Difference
	for _, k := range unionKeys(o, t) {
		if sameJSON(o[k], t[k]) || (opts.MayDiffer != nil && opts.MayDiffer(k)) {
			continue
		}
		if legacyRounding(o[k], t[k], opts.LegacyOffset) {
			continue
		}
		if (o[k] == nil && edge.holds(t[k], opts.LegacyOffset)) || (t[k] == nil && edge.holds(o[k], opts.LegacyOffset)) {
			continue
		}
		if unsignalled(o[k], t[k], opts.Synced) {
			continue
		}
		diffs = append(diffs, Difference{What: "row", Key: k, Ours: shown(o[k]), Theirs: shown(t[k])})
	}
	return diffs
}

// unsignalled reports whether an entry present in one answer only may be a
// change no delta tells of (CompareOptions.Synced).
func unsignalled(ours, theirs json.RawMessage, synced float64) bool {
	switch {
	case synced <= 0 || (ours == nil) == (theirs == nil):
		return false
	case theirs == nil:
		return true
	}
	latest, ok := latestTime(theirs)
	return ok && float64(latest)+1 < synced
}

// latestTime is the latest time an entry holds: a slim entry's
// active_timestamp and idle_timestamp, a legacy entry's timestamps of
// each client and the aggregate.
func latestTime(entry json.RawMessage) (int64, bool) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(entry, &fields) != nil {
		return 0, false
	}
	var latest int64
	found := false
	for k, v := range fields {
		var ts int64
		switch {
		case k == "active_timestamp" || k == "idle_timestamp":
			if json.Unmarshal(v, &ts) != nil {
				return 0, false
			}
		default:
			var client struct {
				Timestamp *int64 `json:"timestamp"`
			}
			if json.Unmarshal(v, &client) != nil || client.Timestamp == nil {
				continue
			}
			ts = *client.Timestamp
		}
		latest, found = max(latest, ts), true
	}
	return latest, found
}

// legacyEntry is the part of a legacy entry the rounding allowance reads.
type legacyEntry struct {
	Website struct {
		Status    string `json:"status"`
		Timestamp int64  `json:"timestamp"`
	} `json:"website"`
}

// legacyRounding reports whether two legacy entries differ only in the
// status the 70-second rule gives within a second of its threshold: one
// says "active" at A, the other "idle" at I, with I - A within a second of
// the offset.
func legacyRounding(ours, theirs json.RawMessage, offset int64) bool {
	var o, t legacyEntry
	if ours == nil || theirs == nil || json.Unmarshal(ours, &o) != nil || json.Unmarshal(theirs, &t) != nil {
		return false
	}
	a, i := o.Website, t.Website
	if a.Status == "idle" {
		a, i = i, a
	}
	if a.Status != "active" || i.Status != "idle" {
		return false
	}
	gap := i.Timestamp - a.Timestamp
	return gap >= offset && gap <= offset+1
}

func appendIfDiffer(diffs []Difference, what, key string, ours, theirs json.RawMessage) []Difference {
	if sameJSON(ours, theirs) {
		return diffs
	}
	return append(diffs, Difference{What: what, Key: key, Ours: shown(ours), Theirs: shown(theirs)})
}

// sameJSON reports whether two JSON values are equal, spacing aside; nil
// is an absent value.
func sameJSON(a, b json.RawMessage) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	var ca, cb bytes.Buffer
	if json.Compact(&ca, a) != nil || json.Compact(&cb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ca.Bytes(), cb.Bytes())
}

func isInt(v json.RawMessage) bool {
	_, err := strconv.ParseInt(string(bytes.TrimSpace(v)), 10, 64)
	return err == nil
}

func unionKeys(a, b map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(a)+len(b))
	for k := range a {
		keys = append(keys, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func shown(v json.RawMessage) string {
	if v == nil {
		return "absent"
	}
	return shorten(v)
}

func shorten(b []byte) string {
	if len(b) > maxShown {
		return string(b[:maxShown]) + "…"
	}
	return string(b)
}
