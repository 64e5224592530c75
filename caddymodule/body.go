package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// bodyPool recycles the buffers of bodies the handler answered itself;
// bodies handed upstream are left to the garbage collector, because the
// transport may still be reading them after the proxy returns.
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledBody keeps an occasional large body from pinning memory.
const maxPooledBody = 16 << 10

// readBody reads the whole request body if it is at most limit bytes.
// complete is false when it is larger or could not be read to its end; the
// request then still carries its original bytes (see unreadBody). A
// request_body max_size overflow is returned as the error, for Caddy to
// answer as it would without us. The buffer comes from bodyPool.
func readBody(r *http.Request, limit int64) (body *[]byte, complete bool, err error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true, nil
	}
	if r.ContentLength > limit {
		return nil, false, nil
	}
	bp := bodyPool.Get().(*[]byte)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		room := b[len(b):min(cap(b), len(b)+int(limit+1-int64(len(b))))]
		n, rerr := r.Body.Read(room)
		b = b[:len(b)+n]
		switch {
		case int64(len(b)) > limit:
			unreadBody(r, bytes.Clone(b), nil)
			return nil, false, nil
		case rerr == io.EOF:
			*bp = b
			return bp, true, nil
		case rerr != nil:
			var he caddyhttp.HandlerError
			if errors.As(rerr, &he) {
				return nil, false, rerr
			}
			unreadBody(r, bytes.Clone(b), rerr)
			return nil, false, nil
		}
	}
}

// releaseBody returns a body buffer nobody else holds to the pool.
func releaseBody(bp *[]byte) {
	if bp != nil && cap(*bp) <= maxPooledBody {
		bodyPool.Put(bp)
	}
}

// unreadBody puts back what readBody consumed, followed by whatever the
// original body still holds (or the read error), so the request goes
// upstream exactly as it came, framing included.
func unreadBody(r *http.Request, consumed []byte, readErr error) {
	rest := r.Body
	var tail io.Reader = rest
	if readErr != nil {
		tail = errReader{readErr}
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(consumed), tail), rest}
}

// setBody installs a fully read body, keeping the request's framing, and
// makes it replayable for the transport's retries.
func setBody(r *http.Request, body []byte) {
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(body)), nil
	}
}

// replaceForm installs a new urlencoded body with framing that matches it:
// net/http sends the ContentLength and TransferEncoding fields, not the
// header, so both must be fixed or the upstream sees a length mismatch.
func replaceForm(r *http.Request, body []byte) {
	setBody(r, body)
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
