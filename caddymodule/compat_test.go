package caddymodule

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// preFL263 makes a simulated Zulip answer like a server older than Zulip
// 9.0 (feature level 263): it does not know last_update_id, so it ignores
// it, lists it in ignored_parameters_unsupported, and never sends
// presence_last_update_id.
func preFL263(sim http.Handler) http.Handler {
	cursor := regexp.MustCompile(`,"presence_last_update_id":-?\d+`)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		ignored := form.Has("last_update_id")
		form.Del("last_update_id")
		enc := form.Encode()
		r.Body = io.NopCloser(strings.NewReader(enc))
		r.ContentLength = int64(len(enc))
		// The raw answer, which this edits; the handler takes it as it
		// takes one from a server that does not compress.
		r.Header.Del("Accept-Encoding")
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, r)
		out := cursor.ReplaceAll(rec.Body.Bytes(), nil)
		if ignored && rec.Code == http.StatusOK && bytes.Contains(out, []byte(`"presences"`)) {
			out = append(bytes.TrimSuffix(out, []byte("}\n")), `,"ignored_parameters_unsupported":["last_update_id"]}`+"\n"...)
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		_, _ = w.Write(out)
	})
}

// TestOldServerGetsItsOwnAnswers: in front of a server that ignores
// last_update_id, full polls get the server's own full answer, and the
// handler stops converting for that host.
func TestOldServerGetsItsOwnAnswers(t *testing.T) {
	tw := newTwin(t, Handler{})
	u := tw.addUser("hamlet@zulip.example", zuliptest.RoleMember)
	other := tw.addUser("othello@zulip.example", zuliptest.RoleMember)
	tw.Both(func(r *zuliptest.Realm) { r.SetPresenceRow(other.id, r.Now(), r.Now()) })
	c := tw.apiClient("zulip-mobile", u)
	direct, proxied := preFL263(tw.Direct), preFL263(tw.Proxied)
	for i, f := range []url.Values{
		form("status", "active", "slim_presence", "true"),
		form("status", "active"),
		form("status", "active", "slim_presence", "true"),
	} {
		d := httptest.NewRecorder()
		direct.ServeHTTP(d, c.request(false, f))
		var upstreamForms []string
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			b, _ := io.ReadAll(r.Body)
			upstreamForms = append(upstreamForms, string(b))
			r.Body = io.NopCloser(bytes.NewReader(b))
			proxied.ServeHTTP(w, r)
			return nil
		})
		p := httptest.NewRecorder()
		if err := tw.h.ServeHTTP(p, c.request(true, f), next); err != nil {
			t.Fatal(err)
		}
		if err := sameAnswer(answer{d.Code, d.Header(), d.Body.Bytes()}, answer{p.Code, p.Header(), p.Body.Bytes()}, false); err != nil {
			t.Fatalf("poll %d: %v\ndirect:  %s\nproxied: %s", i, err, d.Body, p.Body)
		}
		converted := strings.Contains(strings.Join(upstreamForms, " "), "last_update_id")
		if converted != (i == 0) {
			t.Fatalf("poll %d: upstream saw %v; only the first poll should have tried last_update_id", i, upstreamForms)
		}
	}
}
