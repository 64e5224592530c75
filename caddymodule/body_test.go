package caddymodule

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// trackedBody is a request body of unknown length, as a chunked one is,
// that records whether it was closed.
type trackedBody struct {
	io.Reader
	closed bool
}

func (b *trackedBody) Close() error {
	b.closed = true
	return nil
}

// chunkedRequest is a POST whose body has no known length.
func chunkedRequest(body io.Reader) (*http.Request, *trackedBody) {
	tb := &trackedBody{Reader: body}
	r := httptest.NewRequest(http.MethodPost, "http://zulip.example"+apiPresencePath, nil)
	r.Body = tb
	r.ContentLength = -1
	r.TransferEncoding = []string{"chunked"}
	return r, tb
}

// chunked hides the length of r's body, as a chunked upload has none.
func chunked(r *http.Request) *http.Request {
	r.Body = io.NopCloser(r.Body)
	r.ContentLength = -1
	r.TransferEncoding = []string{"chunked"}
	return r
}

// TestReadBodyWithinLimit: a body of at most limit bytes is read whole,
// from a reader that hands out one byte at a time and past the pool
// buffer's first capacity.
func TestReadBodyWithinLimit(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 513, 2000} {
		want := strings.Repeat("x", n)
		r, _ := chunkedRequest(iotest.OneByteReader(strings.NewReader(want)))
		bp, complete, err := readBody(r, 2000)
		if err != nil || !complete || bp == nil || string(*bp) != want {
			t.Fatalf("%d bytes: complete %v, err %v, read %d bytes", n, complete, err, len(deref(bp)))
		}
		releaseBody(bp)
	}
	for _, body := range []io.ReadCloser{nil, http.NoBody} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Body = body
		if bp, complete, err := readBody(r, 10); bp != nil || !complete || err != nil {
			t.Errorf("body %v: %v %v %v", body, bp, complete, err)
		}
	}
}

// TestReadBodyDeclaredTooLong: a Content-Length over the limit is not
// read at all.
func TestReadBodyDeclaredTooLong(t *testing.T) {
	body := strings.Repeat("x", 100)
	r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
	bp, complete, err := readBody(r, 99)
	if bp != nil || complete || err != nil {
		t.Fatalf("%v %v %v", bp, complete, err)
	}
	if got, _ := io.ReadAll(r.Body); string(got) != body {
		t.Fatalf("body after readBody: %q", got)
	}
}

// TestReadBodyChunkedOverLimit: a body of unknown length that turns out
// longer than the limit is given back whole, the bytes readBody consumed
// followed by the rest, with the original body's Close and framing.
func TestReadBodyChunkedOverLimit(t *testing.T) {
	const limit = 100
	for _, n := range []int{limit + 1, limit + 2, 5000} {
		want := strings.Repeat("0123456789", n/10+1)[:n]
		for name, src := range map[string]func() io.Reader{
			"whole":    func() io.Reader { return strings.NewReader(want) },
			"bytewise": func() io.Reader { return iotest.OneByteReader(strings.NewReader(want)) },
		} {
			r, tb := chunkedRequest(src())
			bp, complete, err := readBody(r, limit)
			if bp != nil || complete || err != nil {
				t.Fatalf("%d bytes %s: %v %v %v", n, name, bp, complete, err)
			}
			if r.ContentLength != -1 || len(r.TransferEncoding) != 1 || r.TransferEncoding[0] != "chunked" {
				t.Errorf("%d bytes %s: framing changed: %d %v", n, name, r.ContentLength, r.TransferEncoding)
			}
			got, err := io.ReadAll(r.Body)
			if err != nil || string(got) != want {
				t.Errorf("%d bytes %s: body after readBody: %v, %d bytes, equal %v", n, name, err, len(got), string(got) == want)
			}
			if err := r.Body.Close(); err != nil || !tb.closed {
				t.Errorf("%d bytes %s: Close %v, original closed %v", n, name, err, tb.closed)
			}
		}
	}
}

// TestReadBodyReadError: a body that breaks off is given back as read,
// followed by the same error, so the upstream sees what the client sent
// and the failure with it.
func TestReadBodyReadError(t *testing.T) {
	broken := errors.New("client went away")
	r, tb := chunkedRequest(io.MultiReader(strings.NewReader("status=act"), iotest.ErrReader(broken)))
	bp, complete, err := readBody(r, 1000)
	if bp != nil || complete || err != nil {
		t.Fatalf("%v %v %v", bp, complete, err)
	}
	got, err := io.ReadAll(r.Body)
	if string(got) != "status=act" || !errors.Is(err, broken) {
		t.Fatalf("body after readBody: %q, %v", got, err)
	}
	// errReader keeps failing, as a broken body does.
	if n, err := r.Body.Read(make([]byte, 8)); n != 0 || !errors.Is(err, broken) {
		t.Fatalf("read after the error: %d %v", n, err)
	}
	if r.Body.Close(); !tb.closed {
		t.Fatal("original body not closed")
	}
}

// TestReadBodyHandlerError: request_body's max_size overflow comes back as
// the error, for Caddy to answer with its 413.
func TestReadBodyHandlerError(t *testing.T) {
	tooLarge := caddyhttp.Error(http.StatusRequestEntityTooLarge, errors.New("http: request body too large"))
	r, _ := chunkedRequest(io.MultiReader(strings.NewReader("status=active"), iotest.ErrReader(tooLarge)))
	bp, complete, err := readBody(r, 1000)
	var he caddyhttp.HandlerError
	if bp != nil || complete || !errors.As(err, &he) || he.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("%v %v %v", bp, complete, err)
	}
}

// TestReplaceFormFraming: a rewritten body gets framing that matches it,
// and can be replayed for the transport's retries.
func TestReplaceFormFraming(t *testing.T) {
	r, _ := chunkedRequest(strings.NewReader("status=active&slim_presence=true"))
	r.Header.Set("Content-Type", "multipart/form-data; boundary=x")
	body := []byte("last_update_id=5&status=active")
	replaceForm(r, body)
	if r.ContentLength != int64(len(body)) || r.TransferEncoding != nil ||
		r.Header.Get("Content-Length") != itoa(int64(len(body))) || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Fatalf("framing %d %v %v", r.ContentLength, r.TransferEncoding, r.Header)
	}
	for i := range 3 {
		rc := r.Body
		if i > 0 {
			var err error
			if rc, err = r.GetBody(); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ := io.ReadAll(rc); !bytes.Equal(got, body) {
			t.Fatalf("read %d: %q", i, got)
		}
	}
}

// TestChunkedBodyOverMaxBody: a ping the gate would answer locally is
// forwarded untouched, framing and bytes, when it comes chunked and longer
// than max_body; the client gets the server's answer.
func TestChunkedBodyOverMaxBody(t *testing.T) {
	long := form("status", "active", "ping_only", "true", "new_user_input", "false", "slim_presence", "true")
	for _, tc := range []struct {
		maxBody      int64
		wantUpstream int
	}{
		{1 << 10, 0},
		{48, 1}, // the long ping's 67 bytes are over it, the short one's 28 not
	} {
		tw := newTwin(t, Handler{MaxBody: tc.maxBody, CacheName: t.Name() + itoa(tc.maxBody)})
		u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
		tw.Clock.Advance(time.Hour)
		c := tw.apiClient("phone", u)
		tw.post(c, form("status", "active", "ping_only", "true")) // gains trust
		tw.Clock.Advance(20 * time.Second)
		if _, n := tw.post(c, form("status", "active", "ping_only", "true")); n != 0 {
			t.Fatalf("max_body %d: the short ping reached the server", tc.maxBody)
		}
		tw.Clock.Advance(20 * time.Second)

		d := tw.serveDirect(chunked(c.request(false, long)))
		pr := chunked(c.request(true, long))
		raw := []byte(long.Encode())
		var upstream int
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			if _, ok := presenceFamily(r); ok {
				upstream++
				got, err := io.ReadAll(r.Body)
				if err != nil || !bytes.Equal(got, raw) || r.ContentLength != -1 || len(r.TransferEncoding) != 1 {
					t.Errorf("max_body %d: upstream got %q (%v), length %d, %v", tc.maxBody, got, err, r.ContentLength, r.TransferEncoding)
				}
				r.Body = io.NopCloser(bytes.NewReader(got))
			}
			tw.Proxied.ServeHTTP(w, r)
			return nil
		})
		rec := httptest.NewRecorder()
		if err := tw.h.ServeHTTP(rec, pr, next); err != nil {
			t.Fatal(err)
		}
		if upstream != tc.wantUpstream {
			t.Errorf("max_body %d: %d requests upstream, want %d", tc.maxBody, upstream, tc.wantUpstream)
		}
		if err := sameAnswer(d, answer{rec.Code, rec.Header(), rec.Body.Bytes()}, false); err != nil {
			t.Errorf("max_body %d: %v", tc.maxBody, err)
		}
		tw.sameRows(u)
	}
}

func deref(bp *[]byte) []byte {
	if bp == nil {
		return nil
	}
	return *bp
}
