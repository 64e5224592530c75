package caddymodule

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/cache"
)

// recorder buffers an upstream answer that the handler reads before the
// client sees anything. It keeps its own header map, so nothing of the
// upstream answer leaks to the client unless copied on purpose.
type recorder struct {
	header http.Header
	status int
	// body is the answer's body, decoded once fetch has it whole
	// (recorder.decode): what the handler reads.
	body bytes.Buffer
	// received counts the body bytes as they came from upstream.
	received int
	// wire and coding are the body as it came and its Content-Encoding,
	// when it came compressed; undecoded says it could not be decoded
	// within its bound, and body is then empty.
	wire      []byte
	coding    []string
	undecoded bool
}

func newRecorder() *recorder { return &recorder{header: make(http.Header)} }

func (rec *recorder) Header() http.Header { return rec.header }

func (rec *recorder) WriteHeader(status int) {
	if rec.status == 0 {
		rec.status = status
	}
}

func (rec *recorder) Write(p []byte) (int, error) {
	rec.WriteHeader(http.StatusOK)
	return rec.body.Write(p)
}

// Flush is a no-op: the answer is read only once complete.
func (rec *recorder) Flush() {}

func (rec *recorder) ok() bool { return rec.status >= 200 && rec.status < 300 }

// replay sends the recorded answer to the client unchanged.
func (rec *recorder) replay(w http.ResponseWriter) error {
	copyHeader(w.Header(), rec.header)
	w.WriteHeader(rec.status)
	_, err := w.Write(rec.body.Bytes())
	return err
}

func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}

// subrequest clones r for another upstream call through next: same
// context, host and credentials, so the operator's proxy settings apply.
// It asks for gzip, which Zulip's nginx sends: fetch decodes the answer
// within a bound (encoding.go). What the handler renders from it, the
// encode directive, which runs before this handler, compresses for the
// client.
func subrequest(r *http.Request, method, path string, form []byte) *http.Request {
	sub := r.Clone(ownVars(r.Context()))
	sub.Method = method
	sub.URL.Path, sub.URL.RawPath, sub.URL.RawQuery = path, "", ""
	sub.RequestURI = path
	sub.Header.Set("Accept-Encoding", "gzip")
	if form == nil {
		sub.Body, sub.GetBody, sub.ContentLength, sub.TransferEncoding = http.NoBody, nil, 0, nil
		sub.Header.Del("Content-Type")
		sub.Header.Del("Content-Length")
		return sub
	}
	replaceForm(sub, form)
	return sub
}

// ownVars gives an upstream call its own copy of Caddy's request variables.
// reverse_proxy writes the dial address into them, and the transport may
// still be dialing for one call, reading them from another goroutine, when
// the next call writes: one shared, unlocked map would be a concurrent map
// access, which crashes the process.
func ownVars(ctx context.Context) context.Context {
	vars, ok := ctx.Value(caddyhttp.VarsCtxKey).(map[string]any)
	if !ok {
		return ctx
	}
	return context.WithValue(ctx, caddyhttp.VarsCtxKey, maps.Clone(vars))
}

// errDenied is the error of a request the handler made for a session
// whose credentials the server refused (401 or 403).
var errDenied = errors.New("the server refused the session's credentials")

// getJSON makes a GET through next with the client's credentials, counts
// the answer's bytes under kind, and decodes its body into v. It returns
// the status; err is errRateReserve (nothing was sent: design §7.6), a
// transport error, errDenied (and the session is
// forgotten), or a success body that did not decode.
func (c *call) getJSON(path, rawQuery, kind string, v any) (status int, err error) {
	// Zulip counts the request against the user's rate limit, as one of
	// the client's own (design §7.6).
	if !c.maySpend() {
		return 0, errRateReserve
	}
	sub := subrequest(c.r, http.MethodGet, path, nil)
	sub.URL.RawQuery = rawQuery
	sent := c.h.now()
	rec, err := fetch(c.next, sub)
	if err != nil {
		return 0, err
	}
	c.h.metrics.observeUpstream(kind, rec.received)
	o := zulipVerdict(rec.status, rec.header, rec.body.Bytes(), nil)
	c.observeRate(rec.header, c.h.now(), o == cache.VerdictOK)
	switch o {
	case cache.VerdictDenied:
		c.h.store.Forget(c.key, c.sess)
		return rec.status, errDenied
	case cache.VerdictOK:
		if host := c.hostInfo(); host != nil {
			observeDate(host, rec.header, sent, c.h.now())
		}
		return rec.status, json.Unmarshal(rec.body.Bytes(), v)
	}
	_ = json.Unmarshal(rec.body.Bytes(), v) // errors carry msg, which callers read
	return rec.status, nil
}

// errAborted is the error of an upstream call that reverse_proxy aborted
// with panic(http.ErrAbortHandler): its answer was cut off mid-body.
var errAborted = errors.New("the upstream answer was cut off")

// fetch makes an upstream call through next and records its answer,
// decoded if it came compressed (recorder.decode). An aborted answer is an
// error here: the call was the handler's own, and the client's connection
// is still good.
func fetch(next caddyhttp.Handler, req *http.Request) (rec *recorder, err error) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				panic(v)
			}
			rec, err = nil, errAborted
		}
	}()
	rec = newRecorder()
	if err := next.ServeHTTP(rec, req); err != nil {
		return nil, err
	}
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	rec.decode()
	return rec, nil
}
