package caddymodule

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// forward sends the request upstream as it came and learns from the
// answer, which streams to the client unchanged: compressed by Zulip's
// nginx for a client that accepts gzip, raw for any other (askEncoding).
// The handler reads what it kept of it decoded (tap.decode). The
// request's write must be reserved.
func (c *call) forward(outcome string) error {
	if c.original != nil {
		c.record(outcome, 0)
		return c.replayOriginal()
	}
	c.reinstallBody()
	c.askEncoding()
	sent := c.h.now()
	t := newTap(c.w, forwardCaptureLimit)
	// Counted however the call ends: reverse_proxy panics with
	// http.ErrAbortHandler when the answer is cut off mid-body.
	defer func() { c.record(outcome, t.size) }()
	err := c.next.ServeHTTP(t, c.r)
	received := c.h.now()
	whole := t.decode()
	o := zulipVerdict(t.status, t.Header(), t.head, err)
	if o == cache.VerdictOK && c.req.Kind() == presence.KindPing {
		// Before settle wakes the session's waiting pings, which
		// answer locally only with this session's headers.
		c.learnPing(t.Header(), t.head, whole)
	}
	c.settle(o, t.Header(), sent, received)
	if o == cache.VerdictOK {
		c.learnForwarded(t, sent, received)
	}
	return err
}

// forwardCaptureLimit is how much of a forwarded answer the handler keeps
// to learn from: a ping's whole answer, and the deltas the web app polls.
const forwardCaptureLimit = 64 << 10

// learnForwarded learns from Zulip's success to a forwarded request: the
// headers of a ping's answer, and the user's own row when a poll's delta
// names it.
func (c *call) learnForwarded(t *tap, sent, received time.Time) {
	host := c.hostFor()
	if c.req.Kind() == presence.KindPing {
		return // its header was learned before settle
	}
	if !t.decode() {
		return // too large to have been kept whole
	}
	ans, err := presence.DecodeModern(t.head)
	if err != nil {
		if bytes.Contains(t.head, zephyrKey) {
			host.MarkExtraKeys() // its ping answers carry it too
		}
		return
	}
	c.learnAnswer(host, ans, sent, received)
	c.h.mode.forwardedPoll(c, ans, received)
}

// zephyrKey is the key a zephyr-mirror realm adds to every presence answer
// through Zulip 10.x (update_active_status_backend).
var zephyrKey = []byte(`"zephyr_mirror_active"`)

// learnAnswer learns from a presence answer the server sent: its clock
// from server_timestamp, and the user's own row if the answer holds it.
// Zulip writes the requester's row before it builds the answer, so the row
// is as fresh as the write the request carried.
func (c *call) learnAnswer(host *cache.Host, ans presence.Decoded, sent, received time.Time) {
	host.ObserveClock(sent, received, floatTime(ans.ServerTimestamp), 0)
	row := c.bindUserRow()
	if row == nil {
		return
	}
	id := row.UserID()
	if id == 0 {
		return
	}
	for _, r := range ans.Rows {
		if r.UserID == id {
			row.StartRead()
			row.ReadRow(r.Active, r.Idle)
			return
		}
	}
}

// floatTime converts a server_timestamp (Unix seconds as a float).
func floatTime(sec float64) time.Time {
	return time.Unix(0, int64(sec*float64(time.Second)))
}

// observeDate learns the server's clock from an answer's Date header, which
// has whole seconds.
func observeDate(host *cache.Host, hdr http.Header, sent, received time.Time) {
	if d, err := http.ParseTime(hdr.Get("Date")); err == nil {
		host.ObserveClock(sent, received, d, time.Second)
	}
}

// zulipVerdict classifies an upstream answer. Only Zulip's JSON success
// counts as one: a proxy or load balancer in between can answer 200 with
// an HTML page, which says nothing of the credentials.
func zulipVerdict(status int, hdr http.Header, body []byte, err error) cache.Verdict {
	switch {
	case err != nil:
		return cache.VerdictFailed
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return cache.VerdictDenied
	case status >= 200 && status < 300 && isZulipSuccess(hdr, body):
		return cache.VerdictOK
	}
	return cache.VerdictFailed
}

// zulipSuccessPrefix starts every success body Zulip's json_success writes.
var zulipSuccessPrefix = []byte(`{"result":"success","msg":""`)

// isZulipSuccess reads the decoded body (tap.decode, recorder.decode): a
// gzip answer counts when its decoded body is a success; one the handler
// could not decode comes with no body, and a coding it cannot read fails.
func isZulipSuccess(hdr http.Header, body []byte) bool {
	if plain, gz := contentCoding(hdr); !plain && !gz {
		return false
	}
	mt, _, err := mime.ParseMediaType(hdr.Get("Content-Type"))
	// The whole body must be valid: an answer cut short after its first
	// bytes is no success, whatever its status says.
	return err == nil && mt == "application/json" && bytes.HasPrefix(body, zulipSuccessPrefix) && json.Valid(body)
}

// passThrough sends the request upstream untouched. Nothing is learned from
// the answer but a refusal of the session's credentials: the handler did
// not understand the request, so the server may have read its credentials
// otherwise than the handler would.
func (c *call) passThrough() error {
	if c.original != nil {
		c.record(outcomePassthrough, 0)
		return c.replayOriginal()
	}
	c.reinstallBody()
	rec := caddyhttp.NewResponseRecorder(c.w, nil, nil)
	err := c.next.ServeHTTP(rec, c.r)
	c.record(outcomePassthrough, rec.Size())
	if c.sess != nil && zulipVerdict(rec.Status(), nil, nil, err) == cache.VerdictDenied {
		c.h.store.Forget(c.key, c.sess)
	}
	return err
}

// reinstallBody installs the body as read, so the request goes upstream as
// it came; its buffer now belongs to the transport.
func (c *call) reinstallBody() {
	if c.body != nil {
		setBody(c.r, *c.body)
		c.body = nil
	}
}

// tap passes an answer through to the client while keeping its status,
// its size and the first bytes of its body, so that the handler can tell
// Zulip's success from anything else and learn from it.
type tap struct {
	*caddyhttp.ResponseWriterWrapper
	status int
	size   int
	head   []byte
	limit  int
	// decoded and whole are set by decode: whole says head is the
	// whole body, decoded.
	decoded, whole bool
}

func newTap(w http.ResponseWriter, limit int) *tap {
	return &tap{ResponseWriterWrapper: &caddyhttp.ResponseWriterWrapper{ResponseWriter: w}, limit: limit}
}

func (t *tap) WriteHeader(status int) {
	// 1xx answers are informational; the final status comes after them.
	if t.status == 0 && status >= 200 {
		t.status = status
	}
	t.ResponseWriterWrapper.WriteHeader(status)
}

func (t *tap) Write(p []byte) (int, error) {
	if t.status == 0 {
		t.status = http.StatusOK
	}
	if room := t.limit - len(t.head); room > 0 {
		t.head = append(t.head, p[:min(room, len(p))]...)
	}
	n, err := t.ResponseWriterWrapper.Write(p)
	t.size += n
	return n, err
}

// ReadFrom copies through Write, so that no byte bypasses the tap.
func (t *tap) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(writerOnly{t}, r)
}

// writerOnly hides every method of a writer but Write.
type writerOnly struct{ io.Writer }
