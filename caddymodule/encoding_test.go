package caddymodule

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"

	"github.com/zulip-presence/caddy-zulip-presence/internal/twinrig"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// sent is one upstream exchange as the server made it: the request's
// Accept-Encoding and the answer's bytes as they left the server.
type sent struct {
	path, acceptEncoding string
	header               http.Header
	body                 []byte
}

// serveTee runs r through the handler with upstream as its next handler,
// and returns the client's answer and what the server sent upstream.
func (tw *twin) serveTee(r *http.Request, upstream http.Handler) (answer, []sent) {
	tw.t.Helper()
	var log []sent
	next := twinrig.Next(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httptest.NewRecorder()
		upstream.ServeHTTP(rec, r)
		log = append(log, sent{r.URL.Path, r.Header.Get("Accept-Encoding"), rec.Header().Clone(), bytes.Clone(rec.Body.Bytes())})
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}))
	w := httptest.NewRecorder()
	if err := tw.h.ServeHTTP(w, r, next); err != nil {
		tw.t.Fatalf("ServeHTTP: %v", err)
	}
	return answer{w.Code, w.Header(), w.Body.Bytes()}, log
}

func withAE(r *http.Request, ae string) *http.Request {
	if ae != "" {
		r.Header.Set("Accept-Encoding", ae)
	}
	return r
}

// decoded is an answer as its client reads it.
func decoded(t *testing.T, a answer) answer {
	t.Helper()
	if a.header.Get("Content-Encoding") != "gzip" {
		return a
	}
	zr, err := gzip.NewReader(bytes.NewReader(a.body))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	h := a.header.Clone()
	h.Del("Content-Encoding")
	return answer{a.status, h, b}
}

// gzipTwin is a twin whose realm has enough rows that answers compress.
func gzipTwin(t *testing.T) (*twin, *client) {
	tw := newTwin(t, Handler{})
	u := tw.addUser("hamlet@zulip.com", zuliptest.RoleMember)
	for i := range 40 {
		v := tw.addUser("user"+itoa(int64(i))+"@zulip.com", zuliptest.RoleMember)
		tw.post(tw.apiClient("u", v), form("status", "active", "slim_presence", "true", "ping_only", "true"))
	}
	return tw, tw.apiClient("hamlet", u)
}

// TestGzipForwardedAsItCame: a forwarded answer reaches a client that
// accepts gzip compressed, byte for byte as the server sent it, and the
// handler still reads it (the session is trusted by it).
func TestGzipForwardedAsItCame(t *testing.T) {
	tw, c := gzipTwin(t)
	poll := form("status", "active", "slim_presence", "true", "last_update_id", "-1")
	d := tw.serveDirect(withAE(c.request(false, poll), "gzip, deflate, br"))
	p, log := tw.serveTee(withAE(c.request(true, poll), "gzip, deflate, br"), tw.Proxied)
	if len(log) != 1 || log[0].acceptEncoding != "gzip" || log[0].header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("upstream exchanges %+v, want one forwarded with Accept-Encoding gzip and a gzip answer", log)
	}
	if p.header.Get("Content-Encoding") != "gzip" || !bytes.Equal(p.body, log[0].body) {
		t.Fatalf("client got %v %d bytes, want the server's %d compressed bytes as they came", p.header, len(p.body), len(log[0].body))
	}
	if err := sameAnswer(decoded(t, d), decoded(t, p), false); err != nil {
		t.Fatal(err)
	}
	// The handler reads compressed answers: pings of a gzip client are
	// answered locally once it has learnt from them, and a local answer
	// is never marked compressed.
	local := 0
	for range 20 {
		tw.Clock.Advance(5e9)
		ping := form("status", "active", "ping_only", "true")
		d := tw.serveDirect(withAE(c.request(false, ping), "gzip"))
		p, log := tw.serveTee(withAE(c.request(true, ping), "gzip"), tw.Proxied)
		if len(log) == 0 {
			local++
			if p.header.Get("Content-Encoding") != "" {
				t.Fatalf("local answer with Content-Encoding %q", p.header.Get("Content-Encoding"))
			}
		}
		if err := sameAnswer(decoded(t, d), decoded(t, p), false); err != nil {
			t.Fatal(err)
		}
	}
	if local == 0 {
		t.Errorf("no ping of a gzip client was answered locally")
	}
}

// TestGzipConvertedDecodes: the handler's fetches ask for gzip and decode
// what comes; the full table it renders from them is right.
func TestGzipConvertedDecodes(t *testing.T) {
	tw, c := gzipTwin(t)
	for _, poll := range []url.Values{
		form("status", "active", "slim_presence", "true"),
		form("status", "active"), // legacy: the user list is fetched too
	} {
		tw.Clock.Advance(60e9)
		d := tw.serveDirect(withAE(c.request(false, poll), "gzip"))
		p, log := tw.serveTee(withAE(c.request(true, poll), "gzip"), tw.Proxied)
		if len(log) == 0 {
			t.Fatalf("%s: nothing went upstream", poll.Encode())
		}
		for _, s := range log {
			if s.acceptEncoding != "gzip" || s.header.Get("Content-Encoding") != "gzip" {
				t.Errorf("%s: upstream %s asked %q, answered %q", poll.Encode(), s.path, s.acceptEncoding, s.header.Get("Content-Encoding"))
			}
		}
		if p.header.Get("Content-Encoding") != "" {
			t.Errorf("%s: the rendered answer says Content-Encoding %q (the encode directive compresses it)", poll.Encode(), p.header.Get("Content-Encoding"))
		}
		if err := sameAnswer(decoded(t, d), p, true); err != nil {
			t.Fatalf("%s: %v", poll.Encode(), err)
		}
	}
	if st := tw.Proxied.DefaultRealm().Stats(); st.WireBytes >= st.ResponseBytes {
		t.Errorf("proxied server sent %d bytes on the wire for %d raw", st.WireBytes, st.ResponseBytes)
	}
}

// TestGzipIdentityClient: a client that does not accept gzip gets
// identity, and the forwarded request asks the server for identity.
func TestGzipIdentityClient(t *testing.T) {
	tw, c := gzipTwin(t)
	for i, ae := range []string{"", "gzip;q=0", "br, zstd", "identity"} {
		poll := form("status", "active", "slim_presence", "true", "last_update_id", itoa(int64(i)))
		d := tw.serveDirect(withAE(c.request(false, poll), ae))
		p, log := tw.serveTee(withAE(c.request(true, poll), ae), tw.Proxied)
		if len(log) != 1 || log[0].acceptEncoding != "identity" {
			t.Fatalf("Accept-Encoding %q: upstream %+v, want one request asking identity", ae, log)
		}
		if p.header.Get("Content-Encoding") != "" || d.header.Get("Content-Encoding") != "" {
			t.Fatalf("Accept-Encoding %q: Content-Encoding %q (direct %q)", ae, p.header.Get("Content-Encoding"), d.header.Get("Content-Encoding"))
		}
		if err := sameAnswer(d, p, false); err != nil {
			t.Fatalf("Accept-Encoding %q: %v", ae, err)
		}
		tw.Clock.Advance(60e9)
	}
	// A converted answer to an identity client: decoded from the gzip
	// fetch, rendered raw.
	poll := form("status", "active", "slim_presence", "true")
	d := tw.serveDirect(c.request(false, poll))
	p, _ := tw.serveTee(c.request(true, poll), tw.Proxied)
	if p.header.Get("Content-Encoding") != "" {
		t.Fatalf("converted answer to an identity client: Content-Encoding %q", p.header.Get("Content-Encoding"))
	}
	if err := sameAnswer(d, p, true); err != nil {
		t.Fatal(err)
	}
}

// gzipBomb is a valid Zulip success once decoded, 100 MB of it blanks,
// in about 100 KB of gzip.
func gzipBomb(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	_, _ = zw.Write([]byte(`{"result":"success","msg":"","presences":{},"server_timestamp":1656958539.0,"presence_last_update_id":1`))
	blanks := bytes.Repeat([]byte(" "), 1<<20)
	for range 100 {
		_, _ = zw.Write(blanks)
	}
	_, _ = zw.Write([]byte("}\n"))
	_ = zw.Close()
	return buf.Bytes()
}

// TestGzipBomb: an upstream answer that expands to 100 MB is not decoded
// past the bound; the client gets the server's answer as it came, or its
// own request forwarded, never an answer built from the bomb.
func TestGzipBomb(t *testing.T) { gzipBombCases(t, false) }

// TestGzipBombAllocs is TestGzipBomb measuring what each request
// allocates: far less than the bomb's 100 MB. The race detector makes
// sync.Pool drop what it holds, so it runs without (CI's allocation step).
func TestGzipBombAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's sync.Pool drops items")
	}
	gzipBombCases(t, true)
}

func gzipBombCases(t *testing.T, measure bool) {
	bomb := gzipBomb(t)
	if len(bomb) > 200<<10 {
		t.Fatalf("bomb of %d bytes", len(bomb))
	}
	for _, tc := range []struct {
		name, ae string
		poll     url.Values
	}{
		{"converted, gzip client", "gzip", form("status", "active", "slim_presence", "true")},
		{"converted, identity client", "", form("status", "active", "slim_presence", "true")},
		{"forwarded, gzip client", "gzip", form("status", "active", "slim_presence", "true", "last_update_id", "-1")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tw, c := gzipTwin(t)
			// A server that bombs every client that accepts gzip.
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if _, ok := presenceFamily(r); ok && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
					w.Header().Set("Content-Type", "application/json")
					w.Header().Set("Content-Encoding", "gzip")
					_, _ = w.Write(bomb)
					return
				}
				tw.Proxied.ServeHTTP(w, r)
			})
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			p, log := tw.serveTee(withAE(c.request(true, tc.poll), tc.ae), upstream)
			runtime.ReadMemStats(&after)
			if grown := after.TotalAlloc - before.TotalAlloc; measure && grown > 32<<20 {
				t.Errorf("the request allocated %d MB", grown>>20)
			}
			last := log[len(log)-1]
			if tc.ae == "gzip" {
				// The server's answer to the client's own request, as it came.
				if last.acceptEncoding != "gzip" || p.header.Get("Content-Encoding") != "gzip" || !bytes.Equal(p.body, bomb) {
					t.Fatalf("client got %d %v, %d bytes; want the bomb as it came", p.status, p.header, len(p.body))
				}
				return
			}
			// An identity client: its own request, forwarded for identity.
			d := tw.serveDirect(c.request(false, tc.poll))
			if last.acceptEncoding != "identity" || p.header.Get("Content-Encoding") != "" {
				t.Fatalf("identity client: upstream asked %q, answer %v", last.acceptEncoding, p.header)
			}
			if err := sameAnswer(d, p, true); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestAcceptsGzip: what Zulip's nginx compresses for, read from
// ngx_http_gzip_accept_encoding and ngx_http_gzip_quantity, quirks kept.
func TestAcceptsGzip(t *testing.T) {
	for ae, want := range map[string]bool{
		"": false, "gzip": true, "GZIP": true, "deflate, gzip;q=0.5": true, "gzip;q=0": false,
		"gzip; q=0.0": false, "*": false, "x-gzip": false, "br": false, "gzip;q=x": false,
		"gzip, deflate, br": true, "deflate,gzip": true, "gzip;q=.5": false, "gzip;q=1.5": false,
		"gzip;q=1.000": true, "gzip;q=0.0001": false, "gzip;Q=0.1": true, "gzip ;q=0": false,
		"gzip deflate": false, "xgzipgzip": true, "gzip;": true, "gzip;q": false, "gzip;q=": false,
	} {
		r := httptest.NewRequest(http.MethodPost, "/api/v1/users/me/presence", nil)
		if ae != "" {
			r.Header.Set("Accept-Encoding", ae)
		}
		if got := acceptsGzip(r); got != want {
			t.Errorf("acceptsGzip(%q) = %v, want %v", ae, got, want)
		}
	}
	// Only the first line counts, and not for HTTP/1.0.
	r := httptest.NewRequest(http.MethodPost, "/api/v1/users/me/presence", nil)
	r.Header["Accept-Encoding"] = []string{"br", "gzip"}
	if acceptsGzip(r) {
		t.Error("gzip on a second Accept-Encoding line accepted")
	}
	r.Header["Accept-Encoding"] = []string{"gzip"}
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.0", 1, 0
	if acceptsGzip(r) {
		t.Error("gzip accepted for HTTP/1.0")
	}
}
