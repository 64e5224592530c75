package caddymodule

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// seen is what an upstream received.
type seen struct {
	path             string
	contentType      string
	contentLength    int64
	transferEncoding []string
	body             string
}

// upstream is a simulated Zulip behind a real listener that records what
// reaches it, for checks that only a real proxy hop can show.
type upstream struct {
	sim *zuliptest.Server
	srv *httptest.Server
	mu  sync.Mutex
	got []seen
}

func newUpstream(t *testing.T) *upstream {
	u := &upstream{sim: zuliptest.New(nil)}
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.got = append(u.got, seen{r.URL.Path, r.Header.Get("Content-Type"), r.ContentLength, r.TransferEncoding, string(body)})
		u.mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(body))
		u.sim.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

func (u *upstream) take() []seen {
	u.mu.Lock()
	defer u.mu.Unlock()
	got := u.got
	u.got = nil
	return got
}

func (u *upstream) addr() string { return u.srv.Listener.Addr().String() }

const globalOptions = `{
	admin localhost:2999
	http_port 9080
	https_port 9443
	skip_install_trust
	metrics
}
`

// presenceReq builds a presence POST to a local Caddy site.
func presenceReq(t *testing.T, port int, auth, query string, body io.Reader, ctype string) *http.Request {
	t.Helper()
	url := fmt.Sprintf("http://localhost:%d%s", port, apiPresencePath)
	if query != "" {
		url += "?" + query
	}
	r, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	r.Host = "zulip.example"
	if ctype != "" {
		r.Header.Set("Content-Type", ctype)
	}
	r.Header.Set("Authorization", auth)
	return r
}

func do(t *testing.T, tester *caddytest.Tester, r *http.Request) (int, string) {
	t.Helper()
	resp, err := tester.Client.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestIntegrationLikeReverseProxy sends odd requests (oversize, chunked,
// multipart, query string) to Caddy with the module and to Caddy with plain
// reverse_proxy, in front of the same upstream, and checks the upstream and
// the client see the same thing either way.
func TestIntegrationLikeReverseProxy(t *testing.T) {
	up := newUpstream(t)
	realm := up.sim.DefaultRealm()
	tester := caddytest.NewTester(t)
	tester.InitServer(globalOptions+fmt.Sprintf(`
http://:9080 {
	zulip_presence {
		max_body 1KiB
		cache_name %[2]s
	}
	reverse_proxy %[1]s
}
http://:9081 {
	reverse_proxy %[1]s
}
`, up.addr(), t.Name()), "caddyfile")

	multipartBody := func() (io.Reader, string) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		_ = mw.WriteField("status", "active")
		_ = mw.WriteField("ping_only", "true")
		_ = mw.Close()
		return &buf, mw.FormDataContentType()
	}
	cases := []struct {
		name  string
		query string
		body  func() (io.Reader, string)
		chunk bool
	}{
		{name: "oversize", body: func() (io.Reader, string) {
			return strings.NewReader("status=active&ping_only=true&pad=" + strings.Repeat("x", 2000)), "application/x-www-form-urlencoded"
		}},
		{name: "chunked oversize", chunk: true, body: func() (io.Reader, string) {
			return strings.NewReader("status=active&ping_only=true&pad=" + strings.Repeat("x", 2000)), "application/x-www-form-urlencoded"
		}},
		{name: "chunked", chunk: true, body: func() (io.Reader, string) {
			return strings.NewReader("status=active&ping_only=true"), "application/x-www-form-urlencoded"
		}},
		{name: "multipart", body: multipartBody},
		{name: "query string", query: "status=active&ping_only=true", body: func() (io.Reader, string) { return http.NoBody, "" }},
		{name: "json body", body: func() (io.Reader, string) { return strings.NewReader(`{"status":"active"}`), "application/json" }},
		{name: "bad status", body: func() (io.Reader, string) {
			return strings.NewReader("status=away"), "application/x-www-form-urlencoded"
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var answers [2]string
			var seenBy [2][]seen
			body, ctype := tc.body()
			raw, _ := io.ReadAll(body) // one body for both, multipart boundary included
			for i, port := range []int{9080, 9081} {
				// A fresh user each time: an untrusted session is always forwarded.
				u := realm.AddUser(fmt.Sprintf("%s-%d@zulip.example", strings.ReplaceAll(tc.name, " ", ""), port), "x", zuliptest.RoleMember)
				r := presenceReq(t, port, realm.BasicAuth(u.ID), tc.query, bytes.NewReader(raw), ctype)
				if tc.chunk {
					r.ContentLength = -1
					r.Body = io.NopCloser(r.Body) // hide the length
				}
				status, text := do(t, tester, r)
				answers[i] = fmt.Sprintf("%d %s", status, text)
				seenBy[i] = up.take()
				if len(seenBy[i]) != 1 {
					t.Fatalf("port %d: upstream saw %d requests, want 1", port, len(seenBy[i]))
				}
			}
			if answers[0] != answers[1] {
				t.Errorf("client answers differ:\nmodule: %s\nplain:  %s", answers[0], answers[1])
			}
			m, p := seenBy[0][0], seenBy[1][0]
			if m.body != p.body || m.contentLength != p.contentLength || fmt.Sprint(m.transferEncoding) != fmt.Sprint(p.transferEncoding) || m.contentType != p.contentType {
				t.Errorf("upstream saw\nmodule: %+v\nplain:  %+v", m, p)
			}
		})
	}
}

// TestIntegrationConvertedPoll: a slim full poll through real Caddy goes
// upstream as an incremental request with correct framing, and the client
// gets the full table.
func TestIntegrationConvertedPoll(t *testing.T) {
	up := newUpstream(t)
	realm := up.sim.DefaultRealm()
	tester := caddytest.NewTester(t)
	tester.InitServer(globalOptions+fmt.Sprintf(`
http://:9080 {
	zulip_presence {
		cache_name %s
	}
	reverse_proxy %s
}
`, t.Name(), up.addr()), "caddyfile")
	u := realm.AddUser("hamlet@zulip.example", "Hamlet", zuliptest.RoleMember)
	other := realm.AddUser("othello@zulip.example", "Othello", zuliptest.RoleMember)
	realm.SetPresenceRow(other.ID, realm.Now(), realm.Now())
	for i := range 2 {
		// Chunked on purpose: the rewritten body must get a Content-Length.
		r := presenceReq(t, 9080, realm.BasicAuth(u.ID), "", io.NopCloser(strings.NewReader("status=active&slim_presence=true")), "application/x-www-form-urlencoded")
		r.ContentLength = -1
		status, body := do(t, tester, r)
		if status != 200 || !strings.Contains(body, fmt.Sprintf(`"%d":{"active_timestamp":`, other.ID)) {
			t.Fatalf("poll %d: %d %s", i, status, body)
		}
		got := up.take()
		if len(got) != 1 || !strings.Contains(got[0].body, "last_update_id=") || got[0].contentLength != int64(len(got[0].body)) || len(got[0].transferEncoding) != 0 {
			t.Fatalf("poll %d: upstream saw %+v", i, got)
		}
	}
}

// TestIntegrationReloadKeepsState: a changed config reloads without losing
// sessions, and two handlers with one cache_name share them.
func TestIntegrationReloadKeepsState(t *testing.T) {
	up := newUpstream(t)
	realm := up.sim.DefaultRealm()
	u := realm.AddUser("hamlet@zulip.example", "Hamlet", zuliptest.RoleMember)
	auth := realm.BasicAuth(u.ID)
	realm.Advance(time.Hour) // the user joined well before the first write
	accessLog := filepath.Join(t.TempDir(), "access.log")
	config := func(resync string) string {
		return globalOptions + fmt.Sprintf(`
http://:9080 {
	zulip_presence {
		resync_interval %[3]s
		cache_name %[1]s
	}
	reverse_proxy %[2]s
	log {
		output file %[4]s
		format json
	}
}
http://:9081 {
	zulip_presence {
		cache_name %[1]s
	}
	reverse_proxy %[2]s
}
`, t.Name(), up.addr(), resync, accessLog)
	}
	tester := caddytest.NewTester(t)
	tester.InitServer(config("10m"), "caddyfile")
	ping := func(port int) int {
		status, _ := do(t, tester, presenceReq(t, port, auth, "", strings.NewReader("status=active&ping_only=true"), "application/x-www-form-urlencoded"))
		if status != 200 {
			t.Fatalf("ping status %d", status)
		}
		writes := 0
		for _, s := range up.take() {
			if s.path == apiPresencePath {
				writes++
			}
		}
		return writes
	}
	if n := ping(9080); n != 1 {
		t.Fatalf("first ping: %d upstream requests, want 1", n)
	}
	if n := ping(9081); n != 0 {
		t.Fatal("a handler sharing the cache_name did not share the session")
	}
	tester.InitServer(config("20m"), "caddyfile")
	if n := ping(9080); n != 0 {
		t.Fatal("the session was lost across the reload")
	}
	resp, err := tester.Client.Get("http://localhost:2999/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(metrics, []byte(`caddy_zulip_presence_requests_total{kind="ping",outcome="local"}`)) {
		t.Fatalf("metrics lack the local ping counter:\n%s", grepLines(metrics, "zulip_presence"))
	}
	logged, err := os.ReadFile(accessLog)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"zulip_presence":"forwarded"`, `"zulip_presence":"local"`} {
		if !bytes.Contains(logged, []byte(want)) {
			t.Fatalf("the access log lacks %s:\n%s", want, logged)
		}
	}
	resp, err = tester.Client.Get("http://localhost:2999/zulip_presence/stores")
	if err != nil {
		t.Fatal(err)
	}
	stores, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(stores, []byte(fmt.Sprintf(`{"cache_name":%q,`, t.Name()))) || !bytes.Contains(stores, []byte(`"references":2`)) {
		t.Fatalf("admin stores answer lacks the shared store: %s", stores)
	}
}

func grepLines(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestCaddyfileAdapt checks the Caddyfile→JSON goldens under testdata/:
// a Caddyfile, a line of dashes, then the JSON (or an error substring).
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("../testdata/caddyfile_adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt goldens found: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			caddyfileText, expected, ok := strings.Cut(string(data), "----------")
			if !ok {
				t.Fatal("no ---------- separator")
			}
			caddyfileText, expected = strings.TrimSpace(caddyfileText)+"\n", strings.TrimSpace(expected)
			if strings.HasPrefix(expected, "{") {
				if !caddytest.CompareAdapt(t, f, caddyfileText, "caddyfile", expected) {
					t.Fail()
				}
				return
			}
			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
			if err == nil || !strings.Contains(err.Error(), expected) {
				t.Fatalf("adapt error = %v, want one containing %q", err, expected)
			}
		})
	}
}

// TestIntegrationConvertedPollIsCompressed: with the default order the
// handler runs inside encode, so the full table it renders reaches a
// client that accepts gzip compressed, and decompresses to Zulip's JSON.
func TestIntegrationConvertedPollIsCompressed(t *testing.T) {
	up := newUpstream(t)
	realm := up.sim.DefaultRealm()
	tester := caddytest.NewTester(t)
	tester.InitServer(globalOptions+fmt.Sprintf(`
http://:9080 {
	encode gzip
	zulip_presence {
		cache_name %s
	}
	reverse_proxy %s
}
`, t.Name(), up.addr()), "caddyfile")
	u := realm.AddUser("hamlet@zulip.example", "Hamlet", zuliptest.RoleMember)
	for i := range 200 {
		other := realm.AddUser(fmt.Sprintf("user%d@zulip.example", i), "x", zuliptest.RoleMember)
		realm.SetPresenceRow(other.ID, realm.Now(), realm.Now())
	}
	r := presenceReq(t, 9080, realm.BasicAuth(u.ID), "", strings.NewReader("status=active&slim_presence=true"), "application/x-www-form-urlencoded")
	r.Header.Set("Accept-Encoding", "gzip")
	resp, err := (&http.Client{Transport: &http.Transport{DisableCompression: true}}).Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q, want gzip", resp.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !bytes.HasPrefix(body, []byte(`{"result":"success","msg":"","presences":{`)) || !bytes.HasSuffix(body, []byte("}\n")) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	if got := up.take(); len(got) != 1 || !strings.Contains(got[0].body, "last_update_id=-1") {
		t.Fatalf("upstream saw %+v, want one converted request", got)
	}
}

// TestIntegrationSharedMode: through real Caddy in shared mode, members'
// full polls are answered from the realm's view, which the admin API lists
// and the metrics count.
func TestIntegrationSharedMode(t *testing.T) {
	up := newUpstream(t)
	realm := up.sim.DefaultRealm()
	tester := caddytest.NewTester(t)
	tester.InitServer(globalOptions+fmt.Sprintf(`
http://:9080 {
	zulip_presence {
		mode          shared
		max_staleness 30s
		trust_window  5m
		cache_name    %s
	}
	reverse_proxy %s
}
`, t.Name(), up.addr()), "caddyfile")
	var auths []string
	for i := range 4 {
		u := realm.AddUser(fmt.Sprintf("user%d@zulip.example", i), "x", zuliptest.RoleMember)
		auths = append(auths, realm.BasicAuth(u.ID))
	}
	realm.Advance(time.Hour)
	for round := range 3 {
		for _, auth := range auths {
			status, body := do(t, tester, presenceReq(t, 9080, auth, "", strings.NewReader("status=active&slim_presence=true"), "application/x-www-form-urlencoded"))
			if status != 200 || !strings.HasPrefix(body, `{"result":"success","msg":"","presences":{`) {
				t.Fatalf("round %d: %d %s", round, status, body)
			}
		}
		realm.Advance(5 * time.Second)
	}
	resp, err := tester.Client.Get("http://localhost:2999/zulip_presence/stores")
	if err != nil {
		t.Fatal(err)
	}
	stores, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(stores, []byte(`"views":[{"host":"zulip.example","rows":4,`)) {
		t.Fatalf("admin stores answer lacks the realm's view: %s", stores)
	}
	resp, err = tester.Client.Get("http://localhost:2999/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`caddy_zulip_presence_requests_total{kind="slim",outcome="view_fed"}`, `caddy_zulip_presence_view_age_seconds_count`, `caddy_zulip_presence_view_fetches_total{fetch="full"}`} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Fatalf("metrics lack %s:\n%s", want, grepLines(metrics, "zulip_presence"))
		}
	}
}
