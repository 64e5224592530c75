package caddymodule

import (
	"net/http"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// outcomeViewFed is, in shared mode, a ping or poll whose write went
// upstream as a fetch at the view's cursor; the delta fed the view, which
// gave the answer. A ping answered without the server is "local", as in
// session mode.
const outcomeViewFed = "view_fed"

// outcomeViewJoined is, in shared mode, a web app tab's poll the view
// could not answer: its write fed the view, then the poll went upstream as
// it came, so that the view answers the tab's next poll.
const outcomeViewJoined = "view_joined"

// maxViewDays is the widest window a view is fetched with; a poll asking
// for more (the settings panel's 365 000 days) is served in session mode.
const maxViewDays = 365

// shared serves a ping or a full poll from the host's view, and reports
// false, having sent nothing, when the session is not eligible: its user
// is not an active member of the host who is no guest nor bot per the
// host's user list. Guests stay in session mode: when the server limits
// what guests see, merging a guest's delta would make the view miss rows.
// A session whose trust lapsed is eligible when the store already knows
// its user as such (knownUser): its request goes as a fetch, and the
// server's success to that very request makes it trusted before the view
// answers it.
func (c *call) shared() (bool, error) {
	view := c.eligibleView()
	if view == nil {
		if view = c.probedView(); view == nil {
			return false, nil
		}
		c.reserve()
		return true, c.feedNewSession(view)
	}
	if !c.servable(view) {
		if c.joinable() {
			c.reserve()
			return true, c.join(view)
		}
		return false, nil
	}
	if c.req.Kind() != presence.KindPing {
		// A poll reads the realm: only the server can say that the
		// credentials still work and what became of the requester's own
		// row (Zulip itself moves it when the user turns invisible, and
		// other Caddy instances write it unseen). So every poll reaches
		// it, as a fetch at the view's cursor, and the answer stands as
		// of that fetch.
		c.reserve()
		return true, c.feed(view)
	}
	c.rowFromView(view)
	if done, err := c.gatePing(true); done {
		return true, err
	}
	if c.h.Shadow || !c.plainPing() {
		// The client gets the server's answer to its own request: in
		// shadow mode always, and when the server may answer such a
		// ping with more than the bare answer (an ignored parameter
		// listed), which its answer then tells.
		return true, c.forward(outcomeForwarded)
	}
	return true, c.feed(view)
}

// eligibleView returns the host's view if the session may read and feed
// it, creating the view for the host's first eligible session.
func (c *call) eligibleView() *cache.View {
	now := c.h.now()
	days := c.req.WindowDays()
	if days < 0 || days > maxViewDays {
		return nil
	}
	if host := c.hostInfo(); host == nil || host.IncrementalUnsupported(now) {
		return nil
	}
	if _, known := c.historyIgnored(); !known {
		return nil // session mode learns whether the server takes it
	}
	var row *cache.RowMirror
	var dir *cache.Directory
	if c.sess.Trusted(now, time.Duration(c.h.TrustWindow)) {
		if !c.bindUser() {
			return nil
		}
		if row = c.bindUserRow(); row == nil || c.knowUserID(row) != nil {
			return nil
		}
		dir = c.directory(nil)
	} else {
		// Nothing is asked of the server for credentials it has not
		// accepted lately: only what the store already knows counts.
		row, dir = c.knownUser(), c.h.store.Directory(c.host, c.h.now())
		c.row = row
		if row == nil || row.UserID() == 0 {
			return nil
		}
	}
	if dir == nil {
		return nil
	}
	m, ok := dir.Members[row.UserID()]
	if !ok || !m.Active || m.Bot || m.Guest {
		return nil
	}
	return c.h.store.ViewFor(c.host, c.h.now())
}

// probedView returns the host's view for a full poll of a session the
// store knows nothing of yet (its first request, or its first since it
// was evicted), when the view could answer it: the poll's write goes
// upstream as a fetch at the view's cursor, and the server's answer tells
// whether the credentials work, and whose they are, before anything is
// read from or merged into the view.
func (c *call) probedView() *cache.View {
	switch k := c.req.Kind(); {
	case k != presence.KindSlim && k != presence.KindLegacy:
		return nil
	case c.h.storesEveryWrite():
		return nil // a guest's poll would be sent again, its write stored twice
	case c.req.WindowDays() < 0 || c.req.WindowDays() > maxViewDays:
		return nil
	case c.sess.Trusted(c.h.now(), time.Duration(c.h.TrustWindow)):
		return nil // eligibleView has decided
	}
	if c.row = c.knownUser(); c.row != nil {
		return nil // eligibleView has decided
	}
	host := c.hostInfo()
	if host == nil || host.IncrementalUnsupported(c.h.now()) {
		return nil
	}
	if _, known := c.historyIgnored(); !known {
		return nil
	}
	view := c.h.store.View(c.host, c.h.now())
	if view == nil || !view.Synced() {
		return nil
	}
	return view
}

// feedNewSession sends a new session's full poll as a fetch at the view's
// cursor. Once the server accepted it, the session's user is learned; the
// answer is merged and the poll answered from the view only if the user
// is eligible. Otherwise (a guest, whose answers the server may restrict)
// the view is left as it was, answers nothing until its next merge (which
// brings this write), and the poll goes upstream as it came, its write a
// no-op by now.
func (c *call) feedNewSession(view *cache.View) error {
	f, answered, err := c.fetchForView(view, true)
	if answered {
		return err
	}
	if c.eligibleView() != view {
		view.Invalidate()
		return c.fallback(nil)
	}
	c.merge(view, f.cursor, f.days, f.ans, f.received)
	return c.answerFed(view, f.rec, c.h.now())
}

// sharedWriteElsewhere handles, in shared mode, a write the server
// accepted that did not feed the view (a session's first request, a guest,
// a forwarded poll): the view may lack it, so it answers nothing until a
// fetch merges again. The session is trusted now, so its user (a browser
// session's, from GET /users/me), the user's id and the host's user list
// are learned, once, for its next requests to be eligible without asking
// the server: a web app tab polls every minute, past trust_window.
func (c *call) sharedWriteElsewhere() {
	if view := c.h.store.View(c.host, c.h.now()); view != nil {
		view.Invalidate()
	}
	if !c.bindUser() {
		return
	}
	if row := c.bindUserRow(); row != nil && c.knowUserID(row) == nil {
		c.directory(nil)
	}
}

// knownUser returns the row mirror of the session's user, if the store
// holds one, without making one: the user a browser session was bound to
// when the server last accepted it, or the one Basic credentials name.
func (c *call) knownUser() *cache.RowMirror {
	u := c.sess.User() // a browser session the server accepted before
	if u == "" && c.family == cache.FamilyAPI {
		u = c.basicUserKey()
	}
	if u == "" {
		return nil
	}
	return c.h.store.Row(u, c.h.now())
}

// rowFromView takes the user's row from the view as lower bounds: the view
// holds what the server said of it at the last merge.
func (c *call) rowFromView(view *cache.View) {
	if p, ok := view.Row(c.row.UserID()); ok {
		c.row.SawRow(p.Active, p.Idle)
	}
}

// servable reports whether the view may answer the request at all once
// fed: a web app tab's poll only when the view can place every row
// against the tab's cursor (otherwise the tab joins, or is forwarded as it
// came), with a history window that is not 0.
func (c *call) servable(view *cache.View) bool {
	switch {
	case c.req.Kind() != presence.KindModern:
		return true
	case c.req.WindowDays() == 0 || c.req.LastUpdateID == 0:
		return false
	case c.req.LastUpdateID < 0:
		return true
	}
	return view.Decides(c.req.LastUpdateID)
}

// serveView answers a poll from the view, and reports false, having
// written nothing, when the view may not answer it: it merged no fetch
// within max_staleness (another fetch reset it since the poll's own). fed
// is the answer to the fetch that carried the poll's write: its header
// and status are the answer's.
func (c *call) serveView(view *cache.View, now time.Time, fed *recorder) (bool, error) {
	staleness := time.Duration(c.h.MaxStaleness)
	rowsp := rowPool.Get().(*[]presence.Row)
	var served cache.Served
	var ok bool
	if c.req.Kind() == presence.KindModern && c.req.LastUpdateID > 0 {
		served, ok = view.ServeSince((*rowsp)[:0], c.req.LastUpdateID, now, staleness)
	} else {
		served, ok = view.Serve((*rowsp)[:0], now, c.windowDays(), staleness)
	}
	defer putRows(rowsp, served.Rows)
	if !ok {
		return false, nil
	}
	c.noteSynced(served.Synced)
	buf, ok := c.renderServed(served)
	if !ok {
		return true, c.fallback(nil)
	}
	c.h.metrics.observeViewAge(served.Age)
	return true, c.deliver(rendered(outcomeViewFed, fed, buf))
}

// renderServed renders the answer of what the view served into a pooled
// buffer; ok is false as for renderFull.
func (c *call) renderServed(served cache.Served) (buf *[]byte, ok bool) {
	if c.req.Kind() == presence.KindModern && c.req.LastUpdateID > 0 {
		// An incremental answer: every row that changed, whatever its age.
		a := presence.Envelope{ServerTimestamp: served.ServerTimestamp, LastUpdateID: served.Cursor, Ignored: c.ignoredByHost()}
		buf = bufPool.Get().(*[]byte)
		*buf = presence.AppendModern((*buf)[:0], served.Rows, a)
		return buf, true
	}
	return c.renderFull(served.Rows, served.Cursor, served.ServerTimestamp, c.ignoredByHost())
}

// historyIgnored reports whether the request sent history_limit_days and
// the host ignores it (a Zulip before 10.0): the server would then answer
// its default window and list the parameter in
// ignored_parameters_unsupported. known is false when the request sent it
// and no answer told yet whether the host takes it.
func (c *call) historyIgnored() (ignored, known bool) {
	if c.req.Sent&presence.ParamHistoryLimitDays == 0 {
		return false, true
	}
	host := c.hostInfo()
	if host == nil {
		return false, false
	}
	return host.HistoryLimitIgnored(c.h.now())
}

// historyLimitUntil is how long what an answer told of history_limit_days
// is trusted: a resync interval, as an old server's marks are, so that an
// upgraded server is heard.
func (c *call) historyLimitUntil() time.Time {
	return c.h.now().Add(time.Duration(c.h.ResyncInterval))
}

// ignoredByHost is the ignored_parameters_unsupported the server would
// give the request: its extras (but client), which the fetch carried and
// its answer listed (extras.go), and history_limit_days where the host
// ignores that.
func (c *call) ignoredByHost() []string {
	ignored, _ := c.historyIgnored()
	return c.ignoredFor(ignored)
}

// windowDays is the history window of the server's answer to the
// request: its history_limit_days, unless the host ignores that.
func (c *call) windowDays() int64 {
	if ignored, _ := c.historyIgnored(); ignored {
		return presence.DefaultWindowDays
	}
	return c.req.WindowDays()
}

// feed sends the request's reserved write upstream as a fetch at the
// view's cursor (a full fetch when the view needs one), merges the answer
// into the view, and answers the client from it: the ping body, or the
// full table it asked for.
func (c *call) feed(view *cache.View) error {
	rec, answered, err := c.feedView(view, true)
	if answered {
		return err
	}
	if c.req.Kind() == presence.KindPing {
		if !c.plainPing() {
			// The host's answer to such a ping changed since shared
			// checked it: the client gets its own request's answer, the
			// write a no-op by now.
			return c.fallback(rec)
		}
		return c.deliver(reply{outcome: outcomeViewFed, upstream: rec.received, status: rec.status, header: rec.header, body: presence.PingAnswer})
	}
	return c.answerFed(view, rec, c.h.now())
}

// joinable reports whether a web app tab's poll the view cannot answer
// may be brought onto the view's boundaries.
func (c *call) joinable() bool {
	// A join sends the tab's write twice, which a server that stores
	// every write would store twice.
	return c.req.Kind() == presence.KindModern && c.req.LastUpdateID > 0 && c.req.WindowDays() != 0 && !c.h.storesEveryWrite()
}

// join brings a web app tab onto the view's boundaries: a page load's
// cursor, or one from before the view's last full fetch, is none. The
// poll's answer alone would not do: it starts below the view's cursor or
// beyond it, and carries the tab's own write, so it cannot tell which of
// its rows changed after the view's cursor, and every other tab's cursor
// would stop being a boundary. So the tab's write goes first, as a fetch
// at the view's cursor (its new_user_input stays with the poll); then the
// poll goes upstream as it came, a no-op write by now, and its answer,
// which starts inside the view and (unless others wrote in between) ends
// at the view's cursor, is merged. The id it hands the tab is a boundary,
// and the tab's next poll is answered from the view.
func (c *call) join(view *cache.View) error {
	if _, answered, err := c.feedView(view, false); answered {
		return err
	}
	c.reserve()
	return c.forward(outcomeViewJoined)
}

// feedView sends the request's reserved write upstream as a fetch at the
// view's cursor, with the request's new_user_input when withInput, and
// merges the answer into the view. It reports answered when the client
// already got its answer: the server refused or failed the write, or
// cannot answer incremental fetches.
func (c *call) feedView(view *cache.View, withInput bool) (*recorder, bool, error) {
	f, answered, err := c.fetchForView(view, withInput)
	if answered {
		return nil, true, err
	}
	c.merge(view, f.cursor, f.days, f.ans, f.received)
	return f.rec, false, nil
}

// viewFetch is the answer to a fetch made for a view.
type viewFetch struct {
	rec      *recorder
	ans      presence.Decoded
	cursor   int64 // what the fetch started from, -1 for a full fetch
	days     int64
	received time.Time
}

// fetchForView sends the request's reserved write upstream as a fetch at
// the view's cursor (a full fetch when the view needs one) and learns from
// the answer, without merging it. It reports answered as feedView does.
func (c *call) fetchForView(view *cache.View, withInput bool) (viewFetch, bool, error) {
	c.fed = true
	now := c.h.now()
	days := view.FetchDays(max(c.windowDays(), presence.DefaultWindowDays))
	cursor, ok := view.Cursor(now, days, time.Duration(c.h.ResyncInterval))
	if !ok {
		if view.Resync.Lead(c.r.Context()) {
			defer view.Resync.End()
		} else {
			// Another request made the full fetch; this write rides on
			// the cursor it left.
			cursor, ok = view.Cursor(c.h.now(), days, time.Duration(c.h.ResyncInterval))
		}
	}
	up := presence.Request{Sent: presence.ParamStatus | presence.ParamLastUpdateID, Status: c.req.Status, LastUpdateID: cursor}
	if withInput && c.req.Sent&presence.ParamNewUserInput != 0 {
		up.Sent |= presence.ParamNewUserInput
		up.NewUserInput = c.req.NewUserInput
	}
	if !ok || cursor < 0 {
		up.LastUpdateID = -1
	}
	if up.LastUpdateID < 0 || c.req.Sent&presence.ParamHistoryLimitDays != 0 {
		// On an incremental fetch the window changes nothing (Zulip
		// skips it for a positive cursor), but the answer tells afresh
		// whether the server takes the parameter the client sent: a
		// server upgraded past 9.x is heard at once.
		up.Sent |= presence.ParamHistoryLimitDays
		up.HistoryLimitDays = days
	}
	rec, received, answered, err := c.fetchWrite(up.Encode(), now)
	if answered {
		return viewFetch{}, true, err
	}
	ans, err := presence.DecodeModern(rec.body.Bytes())
	c.noteFetch(up.LastUpdateID, ans)
	if err != nil || !ans.HasLastUpdateID {
		// Not the answer of a Zulip that knows last_update_id: the write
		// was made; serve this request in session mode from now on.
		c.hostFor().MarkIncrementalUnsupported(now.Add(time.Duration(c.h.ResyncInterval)))
		return viewFetch{}, true, c.fallback(nil)
	}
	if !c.extrasIgnored(ans.Ignored) {
		// The server read a parameter it did not list, so the answer
		// may be other than a plain fetch's: it is not merged, the view
		// answers nothing until a fetch merges again, and the poll goes
		// upstream as it came.
		view.Invalidate()
		return viewFetch{}, true, c.fallback(nil)
	}
	host := c.hostFor()
	c.learnAnswer(host, ans, now, received)
	c.learnPingHeader(rec.header)
	if up.Sent&presence.ParamHistoryLimitDays != 0 {
		ignored := ignoresHistoryLimit(ans.Ignored)
		host.MarkHistoryLimit(ignored, c.historyLimitUntil())
		if ignored {
			days = presence.DefaultWindowDays // what the server answered
		}
	}
	return viewFetch{rec: rec, ans: ans, cursor: up.LastUpdateID, days: days, received: received}, false, nil
}

// merge merges the answer to a fetch made at cursor into the view.
func (c *call) merge(view *cache.View, cursor, days int64, ans presence.Decoded, now time.Time) {
	if testFaults.staleView.Load() && view.Synced() && cursor >= 0 {
		ans.Rows = nil // the cursor moves on, the rows stay as they were
	}
	if view.Apply(cursor, days, ans, now) {
		c.kept(view, cursor)
	}
}

// kept stores a view that merged a fetch made at cursor, and counts it.
func (c *call) kept(view *cache.View, cursor int64) {
	c.h.store.KeepView(c.host, view, c.h.now())
	c.h.metrics.observeViewFetch(cursor < 0)
}

// mergeForwarded merges the answer to a web app poll forwarded as it came
// into the host's view, when the session is eligible and the answer
// overlaps the view (or is a full fetch at least as wide).
func (c *call) mergeForwarded(ans presence.Decoded, now time.Time) {
	cursor, days := c.req.LastUpdateID, c.req.WindowDays()
	if c.req.Sent&presence.ParamHistoryLimitDays != 0 {
		c.hostFor().MarkHistoryLimit(ignoresHistoryLimit(ans.Ignored), c.historyLimitUntil())
	}
	if ignoresHistoryLimit(ans.Ignored) {
		days = presence.DefaultWindowDays // what the server answered
	}
	// history_limit_days=0 makes Zulip answer no rows whatever changed,
	// and a full fetch narrower than the view's would drop rows.
	if cursor == 0 || days == 0 || (cursor < 0 && days < presence.DefaultWindowDays) {
		return
	}
	view := c.eligibleView()
	if view == nil || (cursor < 0 && view.Synced()) {
		// A page load's full table would restart the boundaries every
		// other tab's cursor stands on; the view makes its own full
		// fetches every resync_interval.
		return
	}
	if view.ApplyPoll(cursor, days, ans, now) {
		c.kept(view, cursor)
	}
}

// answerFed answers a poll whose write fed the view.
func (c *call) answerFed(view *cache.View, rec *recorder, now time.Time) error {
	if ok, err := c.serveView(view, now, rec); ok {
		return err
	}
	// The view could not take this answer (another fetch reset it): the
	// write was made, so the client's own request now reads.
	return c.fallback(nil)
}

// setLocalHeader sets the header of an answer made without the server:
// the template tmpl, what the server sent on its latest answer to the
// session for a request asking the same language (Cache-Control above
// all, so that no cache in front stores it, and the Vary and
// Content-Language of that language), dated by the server's clock. The
// template is the one the gate checked, passed along: another client of
// the session may replace the session's meanwhile.
func (c *call) setLocalHeader(hdr http.Header, tmpl *cache.PingHeader, now time.Time) {
	for k, v := range tmpl.Header {
		hdr[k] = v
	}
	if host := c.hostInfo(); host != nil {
		date := host.HTTPDate(now)
		for _, k := range [2]string{"Date", "Expires"} {
			if _, ok := tmpl.Header[k]; ok {
				hdr[k] = date
			}
		}
	}
}
