package caddymodule

import (
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// convert serves a full poll (slim or legacy) from an incremental fetch:
// the client's own write goes upstream with the session's cursor, the delta
// is merged into the session's snapshot, and the client gets the full table
// it asked for, rendered from the snapshot.
func (c *call) convert() error {
	if h := c.hostInfo(); h != nil && h.IncrementalUnsupported(c.h.now()) {
		c.reserve()
		return c.forward(outcomeForwarded)
	}
	accepted, err := c.convertLocked()
	if accepted {
		// The snapshot may have grown: charge it to the store now, not
		// on the session's next request.
		c.h.store.Keep(c.key, c.sess, c.h.now())
	}
	return err
}

// convertLocked does convert's work with the session's conversion state
// locked, unlocked however it ends: an answer cut off mid-body panics with
// http.ErrAbortHandler, and the session's next poll must not wait for good.
// accepted reports Zulip's success to the converted request.
func (c *call) convertLocked() (accepted bool, err error) {
	conv := c.sess.LockConversion()
	defer c.sess.UnlockConversion()
	now := c.h.now()
	days := c.req.WindowDays()
	full := conv.NeedsFullFetch(now, days, time.Duration(c.h.ResyncInterval))
	cursor := conv.Cursor
	if full {
		cursor = -1
	}
	up := c.req
	up.Sent |= presence.ParamLastUpdateID
	up.LastUpdateID = cursor

	c.reserve()
	rec, received, answered, err := c.fetchWrite(up.Encode(), now)
	if answered {
		return false, err
	}
	host := c.hostFor()
	ans, err := presence.DecodeModern(rec.body.Bytes())
	c.noteFetch(cursor, ans)
	if err != nil || !ans.HasLastUpdateID || slices.Contains(ans.Ignored, "last_update_id") {
		conv.Reset()
		return true, c.oldServerOrFallback(host, rec, now)
	}
	if !c.extrasIgnored(ans.Ignored) {
		// The server read a parameter it did not list: the answer may
		// be other than the client's own would be. The snapshot stays
		// as of its cursor; the original request goes as it came.
		return true, c.fallback(rec)
	}
	c.learnAnswer(host, ans, now, received)
	if c.req.Sent&presence.ParamHistoryLimitDays != 0 {
		host.MarkHistoryLimit(ignoresHistoryLimit(ans.Ignored), c.historyLimitUntil())
	}
	if ignoresHistoryLimit(ans.Ignored) {
		days = presence.DefaultWindowDays // what the server answered
	}
	applyAnswer(conv, ans, full, cursor, days, now)
	c.noteSynced(conv.SyncedServerTS)
	buf, ok := c.renderFull(conv.Snapshot.Rows(), conv.Cursor, ans.ServerTimestamp, ans.Ignored)
	if !ok {
		return true, c.fallback(rec)
	}
	c.debug("converted", zap.Int("upstream_bytes", rec.received))
	return true, c.deliver(rendered(outcomeConverted, rec, buf))
}

// applyAnswer merges an upstream answer into the session's snapshot.
func applyAnswer(conv *cache.Conversion, ans presence.Decoded, full bool, cursor, days int64, now time.Time) {
	switch {
	case full:
		conv.Snapshot.Replace(ans.Rows)
		conv.Synced, conv.Days, conv.SyncedAt, conv.SyncedServerTS = true, days, now, ans.ServerTimestamp
	case ans.LastUpdateID < cursor:
		// The server's sequence went back (realm presence disabled, or
		// a restored database): its answer is all there is, and the next
		// poll starts over.
		conv.Snapshot.Replace(ans.Rows)
		conv.Synced, conv.SyncedServerTS = false, 0
	default:
		conv.Snapshot.Merge(ans.Rows)
	}
	conv.Cursor = ans.LastUpdateID
}

// rowPool and bufPool recycle the rows and bytes of rendered answers.
var (
	rowPool = sync.Pool{New: func() any { return new([]presence.Row) }}
	bufPool = sync.Pool{New: func() any { return new([]byte) }}
)

// Buffers larger than these are left to the garbage collector, so that
// one realm-wide legacy answer does not pin its megabytes in a pool.
const (
	maxPooledRows  = 16 << 10
	maxPooledBytes = 256 << 10
)

// putRows returns a row buffer to the pool, with the larger backing array
// its rows may have grown into, unless that is too large to keep.
func putRows(p *[]presence.Row, rows []presence.Row) {
	if cap(rows) > cap(*p) {
		*p = rows[:0]
	}
	if cap(*p) <= maxPooledRows {
		rowPool.Put(p)
	}
}

// putBuf returns a byte buffer to the pool unless it is too large to keep.
func putBuf(p *[]byte) {
	if cap(*p) <= maxPooledBytes {
		bufPool.Put(p)
	}
}

// renderFull renders the full table the client asked for, in its format
// and window, from all the rows of a realm as of cursor, at the server's
// clock ts, into a pooled buffer (reply.free returns it). ok is false,
// with nothing rendered, when a legacy answer's rows cannot all be named.
func (c *call) renderFull(all []presence.Row, cursor int64, ts float64, ignored []string) (buf *[]byte, ok bool) {
	days := c.req.WindowDays()
	if ignoresHistoryLimit(ignored) {
		days = presence.DefaultWindowDays
	}
	rowsp := rowPool.Get().(*[]presence.Row)
	defer func() { putRows(rowsp, nil) }()
	rows := (*rowsp)[:0]
	for _, row := range all {
		if presence.InWindow(row.Presence, ts, days) {
			rows = append(rows, row)
		}
	}
	if testFaults.dropRow.Load() && len(rows) > 0 {
		rows = rows[1:]
	}
	*rowsp = rows

	a := presence.Envelope{ServerTimestamp: ts, LastUpdateID: answerID(rows, cursor), Ignored: ignored, LegacyOffset: c.legacyOffset()}
	if c.req.Kind() != presence.KindLegacy {
		buf = bufPool.Get().(*[]byte)
		*buf = presence.AppendModern((*buf)[:0], rows, a)
		return buf, true
	}
	dir := c.directory(rows)
	if dir == nil {
		return nil, false
	}
	rows = named(rows, dir)
	a.LastUpdateID = answerID(rows, cursor)
	buf = bufPool.Get().(*[]byte)
	*buf = presence.AppendLegacy((*buf)[:0], rows, func(id int64) string { return dir.Members[id].Email }, a)
	return buf, true
}

// ignoresHistoryLimit reports whether an answer's
// ignored_parameters_unsupported lists history_limit_days: a server
// before Zulip 10.0 (feature level 288) does not take it and answers its
// default window, 14 days, so the client's answer must have that window.
func ignoresHistoryLimit(ignored []string) bool {
	return slices.Contains(ignored, "history_limit_days")
}

// answerID is the presence_last_update_id of a rendered full answer. Zulip
// sends the largest id among the returned rows, or -1 when there are none;
// per-row ids are not in deltas, so the snapshot's cursor (an upper bound)
// stands in for the largest.
func answerID(rows []presence.Row, cursor int64) int64 {
	if len(rows) == 0 {
		return -1
	}
	return cursor
}

// named keeps the rows Zulip would list in a legacy answer: active humans.
func named(rows []presence.Row, dir *cache.Directory) []presence.Row {
	out := rows[:0]
	for _, row := range rows {
		if m := dir.Members[row.UserID]; m.Active && !m.Bot {
			out = append(out, row)
		}
	}
	return out
}

// oldServerOrFallback handles an answer that is not a modern incremental
// one. A server older than Zulip 9.0 ignores last_update_id and sends the
// full table in the format the client asked for: that answer is the
// client's, once last_update_id is taken out of ignored_parameters_unsupported,
// and the host is not converted for again until the next resync. Anything
// else gets the original request sent upstream.
func (c *call) oldServerOrFallback(host *cache.Host, rec *recorder, now time.Time) error {
	body, ok := presence.DropIgnored(rec.body.Bytes(), "last_update_id")
	if !ok {
		return c.fallback(rec)
	}
	host.MarkIncrementalUnsupported(now.Add(time.Duration(c.h.ResyncInterval)))
	if c.extras != nil && !c.extrasIgnored(presence.IgnoredIn(body)) {
		return c.fallback(rec)
	}
	return c.deliver(reply{outcome: outcomeOldServer, upstream: rec.received, status: rec.status, header: rec.header, body: body})
}

// fetchWrite sends the request's reserved write upstream, in form (sent at
// now), and settles it. It returns the server's success; otherwise
// answered is true and the client has what plain reverse_proxy would have
// given it: the same transport failure, its answer cut off (a panic), the
// server's refusal or error as it came (which is the same whatever the
// request asked to read), or, when that could not be decoded for a client
// that takes no gzip, the answer to its own request sent as it came.
func (c *call) fetchWrite(form string, now time.Time) (rec *recorder, received time.Time, answered bool, err error) {
	rec, err = fetch(c.next, c.fetchRequest(form))
	if err != nil {
		c.settle(cache.VerdictFailed, nil, now, now)
		c.record(outcomeUpstreamError, 0)
		if errors.Is(err, errAborted) {
			panic(http.ErrAbortHandler)
		}
		return nil, now, true, err
	}
	received = c.h.now()
	v := zulipVerdict(rec.status, rec.header, rec.body.Bytes(), nil)
	c.settle(v, rec.header, now, received)
	if v == cache.VerdictOK {
		return rec, received, false, nil
	}
	if ok, err := c.passOn(rec); ok {
		c.record(outcomeUpstreamError, rec.received)
		return nil, received, true, err
	}
	return nil, received, true, c.fallback(rec)
}

// fallback sends the original request upstream and streams its answer to
// the client: a conversion gave up, or the view cannot answer. The write it carries was already made, so the server sees a
// no-op write; the client sees exactly the server's answer.
func (c *call) fallback(rec *recorder) error {
	if rec != nil {
		c.h.metrics.observeUpstream(c.kind, rec.received)
	}
	c.debug("conversion fell back to pass-through")
	// The original carries the write again; the gate learns from it like
	// from any forwarded write.
	c.reserve()
	return c.forward(outcomeFallback)
}
