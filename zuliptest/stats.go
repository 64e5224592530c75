package zuliptest

import "maps"

// Stats counts what a realm's API did, to measure the upstream cost a
// client or proxy causes. Control requests under /_sim/ are not counted.
type Stats struct {
	// Requests counts answered API requests by endpoint: "presence"
	// (POST users/me/presence), "presence_error" (those of them that
	// were not 2xx, counted in "presence" too), "users", "users_me",
	// "realm_presence", "user_presence" and "other" (unknown paths).
	Requests map[string]int64 `json:"requests"`
	// ResponseBytes is the sum of the response body sizes as Zulip
	// wrote them: raw JSON, before nginx's compression.
	ResponseBytes int64 `json:"response_bytes"`
	// WireBytes is the sum of the response body sizes as nginx sent
	// them: compressed for clients that accept gzip (SetGzipLevel),
	// else the same as ResponseBytes.
	WireBytes int64 `json:"wire_bytes"`
	// RowsReturned is the number of entries in the presences of
	// presence answers.
	RowsReturned int64 `json:"rows_returned"`
	// RowsWritten is the number of presence row inserts and changes.
	RowsWritten int64 `json:"rows_written"`
}

// Stats returns a copy of the realm's counters.
func (r *Realm) Stats() Stats {
	defer r.lock()()
	st := r.stats
	st.Requests = maps.Clone(r.stats.Requests)
	return st
}

// ResetStats sets the realm's counters to zero.
func (r *Realm) ResetStats() {
	defer r.lock()()
	r.stats = Stats{Requests: map[string]int64{}}
}

// count records one answered request.
func (r *Realm) count(stat string, status, bytes, wire, rows int) {
	defer r.lock()()
	r.stats.Requests[stat]++
	if stat == statPresence && (status < 200 || status > 299) {
		r.stats.Requests[statPresenceError]++
	}
	r.stats.ResponseBytes += int64(bytes)
	r.stats.WireBytes += int64(wire)
	r.stats.RowsReturned += int64(rows)
}
