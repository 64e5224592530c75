package zuliptest

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// TestNginxGzip: Zulip's nginx.conf (gzip on; gzip_proxied any;
// gzip_types … application/json …; gzip_vary on; level and min length
// nginx's defaults, 1 and 20) compresses JSON answers at level 1 for a
// client whose Accept-Encoding names gzip, marks every answer its gzip
// filter takes (200, 403, 404) Vary: Accept-Encoding, and leaves other
// statuses alone.
func TestNginxGzip(t *testing.T) {
	srv := New(newClock().Now)
	rm := srv.DefaultRealm()
	u := rm.AddUser("hamlet@zulip.com", "King Hamlet", RoleMember)
	for i := range 30 {
		id := rm.AddUser("user"+strings.Repeat("x", i)+"@zulip.com", "User", RoleMember).ID
		rm.SetPresenceRow(id, t0, t0)
	}
	do := func(method, path, ae string, proto int, auth string) (*httptest.ResponseRecorder, Stats) {
		t.Helper()
		rm.ResetStats()
		var body io.Reader
		if method == http.MethodPost {
			body = strings.NewReader("status=active&slim_presence=true&ping_only=false")
		}
		r := httptest.NewRequest(method, "http://zulip.example"+path, body)
		if body != nil {
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		r.Header.Set("Authorization", auth)
		if ae != "" {
			r.Header.Set("Accept-Encoding", ae)
		}
		if proto == 0 {
			r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.0", 1, 0
		}
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		return w, rm.Stats()
	}
	auth := rm.BasicAuth(u.ID)
	raw, rawStats := do(http.MethodGet, "/api/v1/users", "", 1, auth)
	if raw.Code != 200 || raw.Header().Get("Content-Encoding") != "" {
		t.Fatalf("no Accept-Encoding: %d %v", raw.Code, raw.Header())
	}
	if got := raw.Header().Values("Vary"); !slices.Equal(got, []string{"Accept-Language", "Accept-Encoding"}) {
		t.Errorf("identity answer Vary %q, want nginx's line after Django's", got)
	}
	if rawStats.WireBytes != rawStats.ResponseBytes || rawStats.ResponseBytes != int64(raw.Body.Len()) {
		t.Errorf("identity answer: stats %+v, body %d bytes", rawStats, raw.Body.Len())
	}

	gz, gzStats := do(http.MethodGet, "/api/v1/users", "gzip, deflate, br", 1, auth)
	if gz.Header().Get("Content-Encoding") != "gzip" || !slices.Contains(gz.Header().Values("Vary"), "Accept-Encoding") {
		t.Fatalf("gzip client: headers %v", gz.Header())
	}
	if want := compress(raw.Body.Bytes(), DefaultGzipLevel); !bytes.Equal(gz.Body.Bytes(), want) {
		t.Errorf("gzip client: body is not the level-1 gzip of the raw answer")
	}
	if got := gunzip(t, gz.Body.Bytes()); !bytes.Equal(got, raw.Body.Bytes()) {
		t.Errorf("gzip body decodes to %q, want %q", got, raw.Body.Bytes())
	}
	if gzStats.ResponseBytes != rawStats.ResponseBytes || gzStats.WireBytes != int64(gz.Body.Len()) || gzStats.WireBytes >= gzStats.ResponseBytes {
		t.Errorf("gzip stats %+v, want raw %d and wire %d", gzStats, rawStats.ResponseBytes, gz.Body.Len())
	}

	// A presence answer, the module's daily bread, is compressed too.
	p, _ := do(http.MethodPost, "/api/v1/users/me/presence", "gzip", 1, auth)
	if p.Code != 200 || p.Header().Get("Content-Encoding") != "gzip" || !bytes.HasPrefix(gunzip(t, p.Body.Bytes()), []byte(`{"result":"success"`)) {
		t.Errorf("presence answer to a gzip client: %d %v", p.Code, p.Header())
	}

	// ngx_http_gzip_ok: gzip must be named with a q above 0, by an
	// HTTP/1.1 request; "*" and x-gzip do not count.
	for _, tc := range []struct {
		ae    string
		proto int
		gzip  bool
	}{
		{"gzip;q=0", 1, false}, {"gzip; q=0.000", 1, false}, {"gzip;q=0.5", 1, true}, {"GZIP", 1, true},
		{"*", 1, false}, {"x-gzip", 1, false}, {"identity", 1, false}, {"br, zstd", 1, false},
		{"gzip", 0, false},
	} {
		w, st := do(http.MethodGet, "/api/v1/users", tc.ae, tc.proto, auth)
		if got := w.Header().Get("Content-Encoding") == "gzip"; got != tc.gzip || (st.WireBytes == st.ResponseBytes) == tc.gzip {
			t.Errorf("Accept-Encoding %q (HTTP/1.%d): gzip %v (%+v), want %v", tc.ae, tc.proto, got, st, tc.gzip)
		}
	}

	// Statuses nginx's gzip filter does not take: no compression, no
	// Vary: Accept-Encoding.
	denied, _ := do(http.MethodGet, "/api/v1/users", "gzip", 1, "Basic eDp5")
	if denied.Code != http.StatusUnauthorized || denied.Header().Get("Content-Encoding") != "" || slices.Contains(denied.Header().Values("Vary"), "Accept-Encoding") {
		t.Errorf("401: %d %v", denied.Code, denied.Header())
	}
	// A 404 is taken.
	nf, _ := do(http.MethodGet, "/api/v1/nowhere", "gzip", 1, auth)
	if nf.Code != http.StatusNotFound || nf.Header().Get("Content-Encoding") != "gzip" {
		t.Errorf("404: %d %v", nf.Code, nf.Header())
	}

	// Without nginx's compression every answer is raw.
	srv.SetGzipLevel(0)
	off, offStats := do(http.MethodGet, "/api/v1/users", "gzip", 1, auth)
	if off.Header().Get("Content-Encoding") != "" || !bytes.Equal(off.Body.Bytes(), raw.Body.Bytes()) || offStats.WireBytes != offStats.ResponseBytes {
		t.Errorf("gzip off: %v, stats %+v", off.Header(), offStats)
	}
	if srv.GzipLevel() != 0 {
		t.Errorf("GzipLevel %d after SetGzipLevel(0)", srv.GzipLevel())
	}
}

func gunzip(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAcceptsGzipAsNginx: ngx_http_gzip_accept_encoding and
// ngx_http_gzip_quantity, quirks kept (the q digits are added, not
// scaled; a "gzip" right after a rejected one counts).
func TestAcceptsGzipAsNginx(t *testing.T) {
	for ae, want := range map[string]bool{
		"gzip": true, "GZip": true, "gzip, deflate, br": true, "deflate,gzip": true, "deflate, gzip;q=0.5": true,
		"gzip;q=0": false, "gzip; q=0.000": false, "gzip;q=.5": false, "gzip;q=1.5": false, "gzip;q=1.000": true,
		"gzip;q=0.0001": false, "gzip;Q=0.1": true, "gzip ;q=0": false, "gzip deflate": false, "x-gzip": false,
		"xgzipgzip": true, "gzip;": true, "gzip;q": false, "gzip;q=": false, "gzip;q=x": false, "br": false,
	} {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/users/me", nil)
		r.Header.Set("Accept-Encoding", ae)
		if got := AcceptsGzip(r); got != want {
			t.Errorf("Accept-Encoding %q: %v, want %v", ae, got, want)
		}
	}
	r := httptest.NewRequest(http.MethodGet, "/api/v1/users/me", nil)
	r.Header["Accept-Encoding"] = []string{"br", "gzip"}
	if AcceptsGzip(r) {
		t.Error("a second Accept-Encoding line counted")
	}
}
