package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// Shadow mode and sampled verification (docs/design.md §11) compare what
// the handler answers, or would answer, with the server's answer to the
// client's own request sent upstream as it came.

// compareLimit bounds how much of an answer is kept to compare: a
// realm-wide legacy table of 10 000 users is about 1.7 MB. Longer answers
// are not compared (result "skipped").
const compareLimit = 4 << 20

// Results of a comparison, the result label of verify_total.
const (
	verifyMatch    = "match"
	verifyMismatch = "mismatch"
	verifySkipped  = "skipped"
)

// original is the server's answer to a request sent upstream as it came.
type original struct {
	status         int
	header         http.Header
	body           []byte // complete unless cut
	cut            bool   // longer than compareLimit
	sent, received time.Time
}

// fetchedRows is what the handler's own fetch for a poll returned: the
// rows that changed after cursor, up to id. A comparison lets exactly
// these rows differ when the server moved on between the two answers.
type fetchedRows struct {
	cursor, id int64
	rows       []int64 // user ids
	// synced is the server_timestamp of the full fetch the rendered rows
	// were built from (presence.CompareOptions.Synced); 0: unknown.
	synced float64
}

// noteFetch records the answer to the handler's own fetch for the poll,
// for a comparison to come.
func (c *call) noteFetch(cursor int64, ans presence.Decoded) {
	if !c.h.Shadow && c.verifying == nil {
		return
	}
	f := &fetchedRows{cursor: cursor, id: ans.LastUpdateID, rows: make([]int64, len(ans.Rows))}
	for i, r := range ans.Rows {
		f.rows[i] = r.UserID
	}
	c.fetched = f
}

// noteSynced records, for a comparison to come, the server_timestamp of
// the full fetch the answer's rows were built from.
func (c *call) noteSynced(ts float64) {
	if c.fetched != nil {
		c.fetched.synced = ts
	}
}

// serveShadow serves a request in shadow mode: the handler keeps its state
// and decides as it would, but the client gets the server's answer to its
// own request, and what the handler would have answered is compared with
// it. A ping the handler would answer locally goes upstream all the same
// (deliver), and a read of the row tells whether the server stored it.
// A poll goes upstream first, as it came; then the handler makes its own
// fetch and renders its answer aside.
func (c *call) serveShadow(kind presence.Kind) error {
	switch {
	case kind == presence.KindPing:
		return c.answer(kind)
	case kind == presence.KindModern && !c.h.mode.answersTabs():
		c.reserve()
		return c.forward(outcomeForwarded)
	}
	return c.shadowPoll()
}

// shadowPoll sends the poll as it came, the client's answer, then lets the
// handler answer it aside; deliver compares the two.
func (c *call) shadowPoll() error {
	orig, err := c.sendOriginal(c.w, outcomeForwarded)
	if err != nil || zulipVerdict(orig.status, orig.header, orig.body, nil) != cache.VerdictOK {
		return err // nothing the handler would answer differently
	}
	// Whatever else the handler would write goes aside; its own answer
	// is compared when delivered.
	client := c.w
	c.w, c.original = newRecorder(), orig
	defer func() { c.w = client }()
	return c.answer(c.req.Kind())
}

// sendOriginal sends the request upstream as it came, reserved like any
// forwarded write, with its answer streaming to w, and keeps the answer.
// The request is counted under outcome, or only its upstream bytes when
// outcome is "" (a verification's resend, which no client sent).
func (c *call) sendOriginal(w http.ResponseWriter, outcome string) (*original, error) {
	c.reserve()
	c.reinstallBody()
	c.askEncoding()
	t := newTap(w, compareLimit)
	sent := c.h.now()
	err := c.next.ServeHTTP(t, c.r)
	received := c.h.now()
	whole := t.decode()
	o := zulipVerdict(t.status, t.Header(), t.head, err)
	if o == cache.VerdictOK && c.req.Kind() == presence.KindPing {
		c.learnPing(t.Header(), t.head, whole)
	}
	c.settle(o, t.Header(), sent, received)
	if outcome != "" {
		c.record(outcome, t.size)
	} else {
		c.h.metrics.observeUpstream(c.kind, t.size)
	}
	if o == cache.VerdictOK {
		c.learnForwarded(t, sent, received)
	}
	// What is kept is decoded (tap.decode); its header says so.
	hdr := t.Header().Clone()
	hdr.Del("Content-Encoding")
	return &original{status: t.status, header: hdr, body: t.head, cut: !whole, sent: sent, received: received}, err
}

// replayOriginal writes the answer of the request already sent as it came,
// in place of sending it again, when the handler would forward it.
func (c *call) replayOriginal() error {
	copyHeader(c.w.Header(), c.original.header)
	c.w.WriteHeader(c.original.status)
	_, err := c.w.Write(c.original.body)
	return err
}

// compareAnswer compares the answer the handler rendered for a poll with
// the server's answer to the original, when the handler answered it
// itself (outcome tells how); origAfter tells that the original went
// upstream after the handler's own fetch (verification) rather than
// before it (shadow mode).
func (c *call) compareAnswer(ours []byte, orig *original, outcome string, origAfter bool) {
	if outcome != outcomeConverted && outcome != outcomeViewFed {
		return // the handler forwarded it: nothing of its own to compare
	}
	if orig.cut || len(ours) > compareLimit {
		// Too long to keep whole, or not decodable within the limit.
		c.reportVerify(verifySkipped, nil)
		return
	}
	theirs := orig.body
	opts, comparable := c.compareOptions(theirs, origAfter)
	if !comparable {
		c.reportVerify(verifySkipped, nil)
		return
	}
	diffs := presence.CompareAnswers(ours, theirs, opts)
	if len(diffs) > 0 {
		c.reportVerify(verifyMismatch, diffs)
		return
	}
	c.reportVerify(verifyMatch, nil)
}

// compareOptions are the allowances of the comparison of a poll's answers:
// the contract's, and, when the original went first, the rows the
// handler's own fetch returned, which may have changed between the two.
// They cover every change in between only when the fetch started at or
// before the original's id. Otherwise, and when the original went after
// (nothing tells what changed since the fetch), the answers compare only
// if both stand at the same id.
func (c *call) compareOptions(theirs []byte, origAfter bool) (presence.CompareOptions, bool) {
	opts := presence.CompareOptions{Converted: true, LegacyOffset: c.legacyOffset()}
	if c.req.Kind() != presence.KindModern || c.req.LastUpdateID <= 0 {
		opts.Days = c.windowDays()
	}
	theirID, ok := updateID(theirs)
	f := c.fetched
	dir := c.h.store.Directory(c.host, c.h.now())
	keys := c.unnamedKeys(dir)
	opts.MayDiffer = func(k string) bool { return keys[k] }
	if f != nil {
		opts.Synced = f.synced
	}
	switch {
	case !ok || f == nil:
		return opts, ok
	case f.id == theirID:
		return opts, true
	case origAfter || f.cursor > theirID:
		return opts, false
	}
	for _, id := range f.rows {
		keys[strconv.FormatInt(id, 10)] = true
		if dir != nil {
			keys[dir.Members[id].Email] = true
		}
	}
	return opts, true
}

// unnamedKeys are, for a legacy answer, the emails of the users the
// host's user list had as deactivated or bots when the answer left their
// rows out. The list is as old as users_refresh allows, and a user
// reactivated since is a change no delta tells of (contract allowance 1).
func (c *call) unnamedKeys(dir *cache.Directory) map[string]bool {
	keys := map[string]bool{}
	if dir == nil || c.req.Kind() != presence.KindLegacy {
		return keys
	}
	for _, m := range dir.Members {
		if !m.Active || m.Bot {
			keys[m.Email] = true
		}
	}
	return keys
}

// updateID reads presence_last_update_id from an answer.
func updateID(body []byte) (int64, bool) {
	var a struct {
		ID *int64 `json:"presence_last_update_id"`
	}
	if json.Unmarshal(body, &a) != nil || a.ID == nil {
		return 0, false
	}
	return *a.ID, true
}

// pingClaim is what a ping answered without the server rested on: lower
// bounds on the stored times, in the server's clock, and the write.
type pingClaim struct {
	bounds       cache.Bounds
	write        cache.Write
	window       time.Duration
	legacyOffset int64    // seconds, to read a legacy row
	language     []string // the Content-Language the answer repeats
}

// checkLocalPing sends a ping the handler answered (or, shadowing, would
// have answered) locally upstream as it came, to w, and then reads the
// user's row: a row stored by that very request is a write the handler
// would have lost. Sending it cannot change the row when the handler was
// right: its write is then a no-op.
func (c *call) checkLocalPing(w http.ResponseWriter, claim pingClaim, outcome string) error {
	orig, err := c.sendOriginal(w, outcome)
	if err != nil || zulipVerdict(orig.status, orig.header, orig.body, nil) != cache.VerdictOK {
		c.reportVerify(verifySkipped, nil)
		return err
	}
	if !orig.cut && !bytes.Equal(orig.body, presence.PingAnswer) {
		// The server answers this ping with more than a local answer says.
		c.reportVerify(verifyMismatch, []presence.Difference{{What: "body", Ours: string(presence.PingAnswer), Theirs: string(orig.body)}})
		return nil
	}
	if theirs := orig.header.Values("Content-Language"); !slices.Equal(theirs, claim.language) {
		// The headers a local answer repeats are another request's.
		c.reportVerify(verifyMismatch, []presence.Difference{{What: "Content-Language", Ours: strings.Join(claim.language, ", "), Theirs: strings.Join(theirs, ", ")}})
		return nil
	}
	host := c.hostInfo()
	row := c.bindUserRow()
	if host == nil || row == nil || row.UserID() == 0 {
		c.reportVerify(verifySkipped, nil)
		return nil
	}
	earliest, ok := host.ServerEarliest(orig.sent)
	if !ok {
		c.reportVerify(verifySkipped, nil)
		return nil
	}
	read, err := c.readRowValues(row)
	if err != nil {
		c.reportVerify(verifySkipped, nil)
		return nil
	}
	result, diffs := judgePing(claim, read, earliest.Unix())
	c.reportVerify(result, diffs)
	return nil
}

// rowValues is what one read of a user's row told.
type rowValues struct {
	slim         bool
	active, idle int64 // slim
	status       string
	timestamp    int64 // legacy
}

// readRowValues reads the user's row as it stands, without changing what
// the handler knows of it.
func (c *call) readRowValues(row *cache.RowMirror) (rowValues, error) {
	path := c.rowPath(row)
	var ans userPresence
	status, err := c.getJSON(path, "slim_presence=true", "user_presence", &ans)
	switch {
	case err != nil:
		return rowValues{}, err
	case status != http.StatusOK || ans.Result != "success" || ans.Presence == nil:
		return rowValues{}, errNoRow
	}
	p := ans.Presence
	if p.Active != nil && p.Idle != nil {
		return rowValues{slim: true, active: *p.Active, idle: *p.Idle}, nil
	}
	if p.Website == nil || p.Website.Timestamp == nil {
		return rowValues{}, errNoRow
	}
	return rowValues{status: p.Website.Status, timestamp: *p.Website.Timestamp}, nil
}

var errNoRow = errors.New("no presence row in the answer")

// judgePing decides, from a read made after the original of a ping went
// upstream at server time earliest or later (whole seconds), whether the
// server stored that write. A stored time at or after earliest was written
// by it. The claim was wrong when the server stored a time while the
// claim's bound said the stored one was within the window of it: a write
// the handler lost. A stored time past the claim's window by then is the
// row ageing between the answer and the check, not a loss.
func judgePing(claim pingClaim, read rowValues, earliest int64) (string, []presence.Difference) {
	connected, active, known := storedBy(read, earliest, claim.write.Active, claim.legacyOffset)
	if !known {
		return verifySkipped, nil
	}
	// A time no later than what the claim already knew of was stored
	// before the original: the host's clock interval can reach back past
	// it, but the original, sent after the claim was made, cannot.
	connected = newer(connected, claim.bounds.Connected)
	active = newer(active, claim.bounds.Active)
	var diffs []presence.Difference
	if connected > 0 && lost(claim.bounds.Connected, connected, claim.window) {
		diffs = append(diffs, presence.Difference{What: "last_connected_time", Ours: "no-op (stored at or after " + unix(claim.bounds.Connected) + ")", Theirs: "stored at " + strconv.FormatInt(connected, 10)})
	}
	if active > 0 && lost(claim.bounds.Active, active, claim.window) {
		diffs = append(diffs, presence.Difference{What: "last_active_time", Ours: "no-op (stored at or after " + unix(claim.bounds.Active) + ")", Theirs: "stored at " + strconv.FormatInt(active, 10)})
	}
	if len(diffs) > 0 {
		return verifyMismatch, diffs
	}
	return verifyMatch, nil
}

// storedBy returns the stored times (whole seconds, 0 for none) the
// original wrote, as a read tells them; known is false when the read
// cannot tell: a legacy "active" row older than the original says nothing
// of last_connected_time, and a last_active_time stored since the
// original of an idle ping was another writer's (an active write of the
// user's other device, which moves last_connected_time with it).
func storedBy(read rowValues, earliest int64, active bool, offset int64) (connected, activeAt int64, known bool) {
	if read.slim {
		if read.idle >= earliest {
			connected = read.idle
		}
		if read.active >= earliest {
			activeAt = read.active
		}
		return connected, activeAt, active || activeAt == 0
	}
	switch {
	case read.timestamp < earliest && read.status == "active":
		// An active write that stored nothing of last_active_time
		// stored nothing: Zulip keeps last_connected_time at or after
		// last_active_time, so it was within the window too. For an
		// idle write, "active" at A says last_connected_time is at
		// most A plus the legacy offset: known only when that is
		// before earliest.
		return 0, 0, active || read.timestamp+offset < earliest
	case read.timestamp < earliest:
		return 0, 0, true
	case read.status == "idle":
		return read.timestamp, 0, true
	}
	// Storing last_active_time stores last_connected_time too.
	return read.timestamp, read.timestamp, active
}

// newer is sec (whole seconds, 0 for none) if it is after the second of
// bound, else 0.
func newer(sec int64, bound time.Time) int64 {
	if bound.IsZero() || sec > bound.Unix() {
		return sec
	}
	return 0
}

// lost reports whether a time stored at sec (whole seconds) contradicts a
// claimed lower bound on the time stored before: Zulip stores only past
// the window, so the bound was within the window of it.
func lost(bound time.Time, sec int64, window time.Duration) bool {
	if bound.IsZero() {
		return false
	}
	// The stored time lies in [sec, sec+1).
	return time.Unix(sec+1, 0).Sub(bound) <= window
}

func unix(t time.Time) string {
	if t.IsZero() {
		return "none"
	}
	return strconv.FormatInt(t.Unix(), 10)
}

// verifySampled reports whether this request is to be verified, should
// the handler answer it itself: every 1/rate-th request, counted, so that
// samples spread evenly and a run is repeatable.
func (h *Handler) verifySampled() bool {
	rate := h.verifyRate()
	if rate <= 0 {
		return false
	}
	n := float64(h.sampled.Add(1))
	return math.Floor(n*rate) > math.Floor((n-1)*rate)
}

// verifying is what a sampled request keeps to be verified once the
// client has its answer: the body as it came, and the answer the client
// got (deliver keeps it).
type verifying struct {
	body   []byte
	answer []byte
	claim  *pingClaim
}

// startVerifying, for a sampled request, keeps a copy of its body and of
// the answer the client will get.
func (c *call) startVerifying() {
	if c.h.Shadow || !c.h.verifySampled() {
		return
	}
	v := &verifying{}
	if c.body != nil {
		v.body = bytes.Clone(*c.body)
	}
	c.verifying = v
}

// finishVerifying, once the client has its answer, sends the original
// upstream without the client waiting, when the handler answered the
// request itself, and compares.
func (c *call) finishVerifying() {
	v := c.verifying
	if v == nil || !verifiable(c.outcome) {
		return
	}
	c.verifying = nil
	later := c.detached(v.body)
	c.h.verifications.Add(1)
	go func() {
		defer c.h.verifications.Done()
		later.verifyAfter(v)
	}()
}

// verifiable reports whether a request answered with outcome is one the
// handler answered itself, which verification checks.
func verifiable(outcome string) bool {
	return outcome == outcomeLocal || outcome == outcomeConverted || outcome == outcomeViewFed
}

// detached is a copy of the call for work after the client's answer: its
// request no longer ends with the client's, and carries the body as it
// came.
func (c *call) detached(body []byte) *call {
	d := *c
	ctx := context.WithValue(context.WithoutCancel(ownVars(c.r.Context())), verificationKey{}, true)
	r := c.r.Clone(ctx)
	if body != nil {
		setBody(r, body)
	}
	d.r, d.body, d.verifying, d.original = r, nil, nil, nil
	d.ticket = cache.Ticket{}
	return &d
}

// verificationKey marks the context of a request the handler sends
// upstream to verify an answer it gave, so that the rest of the chain (and
// the tests, which count a client's upstream calls) can tell it from the
// client's own.
type verificationKey struct{}

// verifyAfter sends the original of a request the handler answered itself
// upstream and compares the server's answer with the client's. Its write
// is a no-op by then: a converted poll's went upstream with the conversion,
// and a local ping's was one (or else the check finds the loss, and the
// server stores it now).
func (c *call) verifyAfter(v *verifying) {
	defer func() {
		if r := recover(); r != nil && r != http.ErrAbortHandler {
			panic(r)
		}
	}()
	c.sess = c.h.store.Acquire(c.key, c.h.now())
	// As in serve: the original's reserved write is settled, and the
	// hold on the session released, however the check ends, an answer
	// cut off mid-body (http.ErrAbortHandler) included.
	defer c.release()
	discard := newRecorder()
	c.w = discard
	if c.outcome == outcomeLocal {
		if v.claim == nil {
			c.reportVerify(verifySkipped, nil)
			return
		}
		_ = c.checkLocalPing(discard, *v.claim, "")
		return
	}
	ours, outcome := v.answer, c.outcome
	orig, err := c.sendOriginal(discard, "")
	if err != nil || zulipVerdict(orig.status, orig.header, orig.body, nil) != cache.VerdictOK {
		c.reportVerify(verifySkipped, nil)
		return
	}
	c.compareAnswer(ours, orig, outcome, true)
}
