package caddymodule

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/zulip-presence/caddy-zulip-presence/internal/twinrig"
	"github.com/zulip-presence/caddy-zulip-presence/presence"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// seenUpstream is one presence request that reached the proxied server.
type seenUpstream struct {
	body, query string
}

// fetch reports whether the module sent it as its own fetch.
func (s seenUpstream) fetch() bool { return strings.Contains(s.body, "last_update_id=") }

// extrasRig is a twin whose two servers may be wrapped alike (a server
// that behaves unlike zuliptest), recording the presence requests that
// reach the proxied one.
type extrasRig struct {
	*twin
	direct, proxied http.Handler
	seen            []seenUpstream
}

func newExtrasRig(t *testing.T, cfg Handler, wrap func(http.Handler) http.Handler) *extrasRig {
	tw := newTwin(t, cfg)
	rig := &extrasRig{twin: tw, direct: tw.Direct, proxied: tw.Proxied}
	if wrap != nil {
		rig.direct, rig.proxied = wrap(tw.Direct), wrap(tw.Proxied)
	}
	return rig
}

// exchange sends form (its body) and query from c to both sides and checks
// the answers as the mode's contract allows; it returns the direct answer
// and the presence requests the proxied side saw.
func (rig *extrasRig) exchange(c *client, form url.Values, query string) (answer, []seenUpstream) {
	rig.t.Helper()
	req := func(proxied bool) *http.Request {
		r := c.request(proxied, form)
		if query != "" {
			r.URL.RawQuery = query
			r.RequestURI = r.URL.RequestURI()
		}
		return r
	}
	rec := httptest.NewRecorder()
	rig.direct.ServeHTTP(rec, req(false))
	d := answer{rec.Code, rec.Header(), rec.Body.Bytes()}
	rig.seen = rig.seen[:0]
	// The client's request can be canceled; work the handler does after
	// the client's answer (a sampled verification) runs detached, on a
	// context that cannot, and is not what the poll cost.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next := twinrig.Next(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := presenceFamily(r); ok && r.Context().Done() != nil {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			rig.seen = append(rig.seen, seenUpstream{body: string(b), query: r.URL.RawQuery})
		}
		rig.proxied.ServeHTTP(w, r)
	}))
	rec = httptest.NewRecorder()
	if err := rig.h.ServeHTTP(rec, req(true).WithContext(ctx), next); err != nil {
		rig.t.Fatalf("ServeHTTP: %v", err)
	}
	p := answer{rec.Code, rec.Header(), rec.Body.Bytes()}
	if rig.h.Mode == modeShared {
		// The view's answer stands as of its fetch, within max_staleness.
		if dm, pm := serverTimestamp.FindSubmatch(d.body), serverTimestamp.FindSubmatch(p.body); dm != nil && pm != nil {
			p.body = serverTimestamp.ReplaceAll(p.body, dm[0])
		}
	}
	if err := sameAnswer(d, p, isFullPoll(form)); err != nil {
		rig.t.Fatalf("%s %s ?%s at %s: %v\ndirect:  %d %s\nproxied: %d %s", c.name, form.Encode(), query, rig.Clock.Now().Format(time.TimeOnly), err, d.status, d.body, p.status, p.body)
	}
	return d, rig.seen
}

// extrasRealm is a realm of members whose phones poll slim every minute
// through the handler (the traffic that keeps a view fed), and a script
// of user 0.
func extrasRealm(t *testing.T, mode string, wrap func(http.Handler) http.Handler) (*extrasRig, []twinUser, []*client, *client) {
	rig := newExtrasRig(t, Handler{Mode: mode, TrustWindow: caddy.Duration(5 * time.Minute)}, wrap)
	var users []twinUser
	var phones []*client
	for i := range 4 {
		u := rig.addUser(fmt.Sprintf("user%d@zulip.example", i), zuliptest.RoleMember)
		users = append(users, u)
		phones = append(phones, rig.apiClient(fmt.Sprint("phone", i), u))
	}
	rig.Clock.Advance(time.Hour)
	return rig, users, phones, rig.apiClient("script", users[0])
}

// TestExtrasConverted: a full poll carrying a parameter Zulip does not
// know, in the body, in the query string or in a multipart body, is
// converted with the parameter carried on the fetch where it came; the
// server lists it as ignored, and the client gets that list, in session
// mode from the fetch's answer and in shared mode from the view. Once the
// realm is warm, each such poll costs one fetch, as any other.
func TestExtrasConverted(t *testing.T) {
	cases := []struct {
		name      string
		form      url.Values
		query     string
		multipart bool
		inBody    string // the extras the fetch must carry in its body
	}{
		{"body", form("status", "active", "note", "cron"), "", false, "&note=cron"},
		{"body, slim", form("status", "idle", "slim_presence", "true", "note", "cron"), "", false, "&note=cron"},
		{"query", form("status", "active"), "note=cron", false, ""},
		{"query, escaped", form("status", "active", "slim_presence", "true"), "n%6Fte=a+b%21&zz", false, ""},
		{"body and query", form("status", "active", "b", "2"), "a=1", false, "&b=2"},
		{"multipart", form("status", "active", "note", "cron job"), "", true, "&note=cron+job"},
		{"client", form("status", "active", "client", "cron"), "", false, "&client=cron"},
		{"client and note", form("status", "active", "client", "cron", "note", "x"), "", false, "&client=cron&note=x"},
	}
	for _, mode := range []string{modeSession, modeShared} {
		for _, tc := range cases {
			t.Run(mode+"/"+tc.name, func(t *testing.T) {
				rig, users, phones, script := extrasRealm(t, mode, nil)
				script.multipart = tc.multipart
				fetches := 0
				for i := range 12 {
					for _, p := range phones {
						rig.exchange(p, form("status", "active", "slim_presence", "true"), "")
					}
					rig.Clock.Advance(20 * time.Second)
					d, seen := rig.exchange(script, tc.form, tc.query)
					rig.sameRows(users...)
					if d.status != http.StatusOK {
						t.Fatalf("direct answer %d %s", d.status, d.body)
					}
					if names := presence.IgnoredNames(presence.Parse(urlencodedType, []byte(tc.form.Encode()), tc.query).Extras); len(names) > 0 &&
						!bytes.Contains(d.body, []byte(`"ignored_parameters_unsupported":["`+strings.Join(names, `","`)+`"]`)) {
						t.Fatalf("the direct answer does not list %q: %s", names, d.body)
					}
					if i == 0 && len(seen) == 2 && !seen[1].fetch() {
						// The session's first legacy poll: its rows
						// are not all named yet, so the original follows.
						seen = seen[:1]
					}
					if len(seen) != 1 || !seen[0].fetch() {
						t.Fatalf("poll %d: upstream saw %+v, want one fetch", i, seen)
					}
					fetches++
					if !strings.HasSuffix(seen[0].body, tc.inBody) || seen[0].query != tc.query {
						t.Fatalf("fetch body %q, query %q: want the body to end in %q and the query %q", seen[0].body, seen[0].query, tc.inBody, tc.query)
					}
					rig.Clock.Advance(40 * time.Second)
				}
				if fetches != 12 {
					t.Fatalf("%d fetches for 12 polls", fetches)
				}
			})
		}
	}
}

const urlencodedType = "application/x-www-form-urlencoded"

// readsNote wraps a server as a Zulip that takes a parameter named note
// (one released after this module, say): its answers do not list note in
// ignored_parameters_unsupported.
func readsNote(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del("Accept-Encoding") // a plain body, to rewrite
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, r)
		body := rec.Body.Bytes()
		if out, ok := presence.DropIgnored(body, "note"); ok {
			body = out
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.Header().Del("Content-Length")
		w.WriteHeader(rec.Code)
		w.Write(body)
	})
}

// TestExtrasReadByServer: a server that does not list the parameter gets
// the original request, as it came, and the client exactly its answer;
// the handler then notes that the host reads it, and sends such polls as
// they came, without a fetch, until the next resync_interval.
func TestExtrasReadByServer(t *testing.T) {
	for _, mode := range []string{modeSession, modeShared} {
		t.Run(mode, func(t *testing.T) {
			rig, users, phones, script := extrasRealm(t, mode, readsNote)
			f := form("status", "active", "note", "cron")
			var fetches, originals int
			for i := range 25 {
				for _, p := range phones {
					rig.exchange(p, form("status", "active", "slim_presence", "true"), "")
				}
				rig.Clock.Advance(20 * time.Second)
				d, seen := rig.exchange(script, f, "")
				rig.sameRows(users...)
				if bytes.Contains(d.body, []byte("ignored_parameters_unsupported")) {
					t.Fatalf("the wrapped server listed a parameter: %s", d.body)
				}
				for _, s := range seen {
					if s.fetch() {
						fetches++
					} else if s.body == f.Encode() && s.query == "" {
						originals++
					} else {
						t.Fatalf("poll %d: upstream saw %+v", i, s)
					}
				}
				if len(seen) == 0 || seen[len(seen)-1].fetch() {
					t.Fatalf("poll %d: upstream saw %+v, want the original last", i, seen)
				}
				rig.Clock.Advance(40 * time.Second)
			}
			// 25 minutes, resync_interval 10m: a fetch when the note is
			// made and after each time it lapses.
			t.Logf("%d fetches, %d originals", fetches, originals)
			if originals != 25 || fetches > 3 {
				t.Fatalf("%d fetches and %d originals for 25 polls; want at most 3 fetches", fetches, originals)
			}
		})
	}
}

// TestExtrasOnZulip9: on Zulip 9.x, which does not take history_limit_days
// either, a script sending it beside a parameter Zulip does not know gets
// both listed, sorted, as the server lists them, and the default 14-day
// window, in session mode and from the shared view; once the handler knows
// the host, each such poll costs one fetch.
func TestExtrasOnZulip9(t *testing.T) {
	for _, mode := range []string{modeSession, modeShared} {
		for _, extra := range []string{"note", "a"} {
			t.Run(mode+"/"+extra, func(t *testing.T) {
				rig, users, phones, script := extrasRealm(t, mode, nil)
				rig.RunZulip(zuliptest.FeatureLevelZulip9)
				// users[3] was last connected three days ago: inside the
				// default window, outside a one-day one.
				phones = phones[:3]
				rig.Both(func(r *zuliptest.Realm) {
					then := r.Now().Add(-72 * time.Hour)
					r.SetPresenceRow(users[3].id, then, then)
				})
				want := `"ignored_parameters_unsupported":["a","history_limit_days"]`
				if extra == "note" {
					want = `"ignored_parameters_unsupported":["history_limit_days","note"]`
				}
				for i := range 10 {
					for _, p := range phones {
						rig.exchange(p, form("status", "active", "slim_presence", "true"), "")
					}
					rig.Clock.Advance(20 * time.Second)
					days := []string{"1", "30"}[i%2]
					d, seen := rig.exchange(script, form("status", "active", "slim_presence", "true", "history_limit_days", days, extra, "x"), "")
					rig.sameRows(users[:3]...)
					if !bytes.Contains(d.body, []byte(want)) || !bytes.Contains(d.body, []byte(fmt.Sprintf(`"%d":`, users[3].id))) {
						t.Fatalf("the direct answer lacks %s or user %d's row: %s", want, users[3].id, d.body)
					}
					if i >= 2 && (len(seen) != 1 || !seen[0].fetch()) {
						t.Fatalf("poll %d: upstream saw %+v, want one fetch", i, seen)
					}
					rig.Clock.Advance(40 * time.Second)
				}
			})
		}
	}
}
