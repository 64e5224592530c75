package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// readBody reads at most limit bytes of the request body. complete is false
// when the body is larger than limit or could not be read to its end; the
// request then still carries its original bytes (see restoreBody). A
// request_body max_size overflow is returned as the error, for Caddy to
// answer as it would without us.
func readBody(r *http.Request, limit int64) (body []byte, complete bool, err error) {
	if r.Body == nil || r.Body == http.NoBody {
		return nil, true, nil
	}
	if r.ContentLength > limit {
		return nil, false, nil
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	var he caddyhttp.HandlerError
	if errors.As(err, &he) {
		return nil, false, err
	}
	if err != nil || int64(len(buf)) > limit {
		restoreBody(r, buf, err)
		return nil, false, nil
	}
	return buf, true, nil
}

// restoreBody puts back what readBody consumed, followed by whatever the
// original body still holds (or the read error), so the request goes
// upstream exactly as it came, framing included.
func restoreBody(r *http.Request, consumed []byte, readErr error) {
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
