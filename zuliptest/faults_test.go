package zuliptest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// faultEnv is a simulated Zulip behind a Faults handler on a real
// listener, with one user.
type faultEnv struct {
	t      *testing.T
	srv    *Server
	faults *Faults
	ts     *httptest.Server
	auth   string
}

func newFaultEnv(t *testing.T) *faultEnv {
	t.Helper()
	srv := New(newClock().Now)
	u := srv.DefaultRealm().AddUser("hamlet@zulip.com", "King Hamlet", RoleMember)
	f := NewFaults(srv)
	ts := httptest.NewServer(f)
	t.Cleanup(ts.Close)
	return &faultEnv{t: t, srv: srv, faults: f, ts: ts, auth: srv.DefaultRealm().BasicAuth(u.ID)}
}

// presenceAnswer is what the server answers a slim full poll at the
// moment: the body a faulted answer is cut from.
func (e *faultEnv) presenceAnswer() []byte {
	e.t.Helper()
	rec := httptest.NewRecorder()
	e.srv.ServeHTTP(rec, e.request(context.Background(), "/api/v1/users/me/presence"))
	if rec.Code != http.StatusOK {
		e.t.Fatalf("direct answer %d %s", rec.Code, rec.Body)
	}
	return rec.Body.Bytes()
}

func (e *faultEnv) request(ctx context.Context, path string) *http.Request {
	e.t.Helper()
	method, body := http.MethodGet, ""
	if strings.HasSuffix(path, "/presence") {
		method, body = http.MethodPost, "status=active&slim_presence=true"
	}
	r, err := http.NewRequestWithContext(ctx, method, e.ts.URL+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	r.Header.Set("Authorization", e.auth)
	return r
}

// result is what a client saw: an answer, or where the exchange broke.
type result struct {
	status  int
	header  http.Header
	body    []byte
	doErr   error // no answer at all
	readErr error // an answer whose body broke off
}

func (e *faultEnv) do(path string) result {
	e.t.Helper()
	// A fresh transport per request: a broken connection is never reused,
	// and the client never retries on another one. It asks for identity,
	// so that the cut answers are cut from the raw body.
	tr := &http.Transport{DisableKeepAlives: true, DisableCompression: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(e.request(context.Background(), path))
	if err != nil {
		return result{doErr: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: body, readErr: err}
}

func (e *faultEnv) presenceRequests() int64 {
	return e.srv.DefaultRealm().Stats().Requests[statPresence]
}

func TestFaultNonePassesThrough(t *testing.T) {
	e := newFaultEnv(t)
	want := e.presenceAnswer()
	e.faults.SetFault(Fault{Mode: FaultNone})
	got := e.do("/api/v1/users/me/presence")
	if got.doErr != nil || got.readErr != nil || got.status != http.StatusOK || !bytes.Equal(got.body, want) {
		t.Fatalf("got %+v, want 200 %s", got, want)
	}
	if n := e.faults.Faulted(); n != 0 {
		t.Fatalf("Faulted() = %d, want 0", n)
	}
}

func TestFaultCutAnswers(t *testing.T) {
	for _, tc := range []struct {
		mode    FaultMode
		wantErr error
	}{
		{FaultResetMidBody, syscall.ECONNRESET},
		{FaultTruncated, io.ErrUnexpectedEOF},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			e := newFaultEnv(t)
			want := e.presenceAnswer()
			before := e.presenceRequests()
			e.faults.SetFault(Fault{Mode: tc.mode})
			got := e.do("/api/v1/users/me/presence")
			if got.doErr != nil {
				t.Fatalf("no answer: %v", got.doErr)
			}
			if got.status != http.StatusOK || got.header.Get("Content-Type") != "application/json" {
				t.Fatalf("answer %d %v, want the server's 200 JSON", got.status, got.header)
			}
			if cl := got.header.Get("Content-Length"); cl != strconv.Itoa(len(want)) {
				t.Fatalf("Content-Length %s, want the full %d", cl, len(want))
			}
			if !errors.Is(got.readErr, tc.wantErr) {
				t.Fatalf("body read error %v, want %v", got.readErr, tc.wantErr)
			}
			if len(got.body) == 0 || len(got.body) >= len(want) || !bytes.HasPrefix(want, got.body) {
				t.Fatalf("got %d bytes %q, want a proper prefix of %q", len(got.body), got.body, want)
			}
			if n := e.presenceRequests() - before; n != 1 {
				t.Fatalf("the server answered %d requests, want 1", n)
			}
		})
	}
}

func TestFaultResetBeforeHeaders(t *testing.T) {
	e := newFaultEnv(t)
	e.faults.SetFault(Fault{Mode: FaultResetBeforeHeaders})
	got := e.do("/api/v1/users/me/presence")
	if got.doErr == nil {
		t.Fatalf("got an answer %d %s, want a broken connection", got.status, got.body)
	}
	if n := e.presenceRequests(); n != 0 {
		t.Fatalf("the server saw %d requests, want none", n)
	}
}

func TestFaultHTMLAnswers(t *testing.T) {
	for _, tc := range []struct {
		mode   FaultMode
		status int
	}{
		{FaultNotJSON, http.StatusOK},
		{Fault500, http.StatusInternalServerError},
		{Fault502, http.StatusBadGateway},
	} {
		t.Run(tc.mode.String(), func(t *testing.T) {
			e := newFaultEnv(t)
			e.faults.SetFault(Fault{Mode: tc.mode})
			got := e.do("/api/v1/users/me/presence")
			if got.doErr != nil || got.readErr != nil {
				t.Fatalf("broken exchange: %v %v", got.doErr, got.readErr)
			}
			if got.status != tc.status || !strings.HasPrefix(got.header.Get("Content-Type"), "text/html") {
				t.Fatalf("answer %d %q, want %d text/html", got.status, got.header.Get("Content-Type"), tc.status)
			}
			if json.Valid(got.body) || !bytes.HasPrefix(got.body, []byte("<!DOCTYPE html>")) {
				t.Fatalf("body %q, want an HTML page", got.body)
			}
			if n := e.presenceRequests(); n != 0 {
				t.Fatalf("the server saw %d requests, want none", n)
			}
		})
	}
}

func TestFaultSlow(t *testing.T) {
	e := newFaultEnv(t)
	want := e.presenceAnswer()
	const delay = 200 * time.Millisecond
	e.faults.SetFault(Fault{Mode: FaultSlow, Delay: delay})
	start := time.Now()
	got := e.do("/api/v1/users/me/presence")
	if elapsed := time.Since(start); elapsed < delay {
		t.Fatalf("answered after %v, before the delay of %v", elapsed, delay)
	}
	if got.doErr != nil || got.readErr != nil || got.status != http.StatusOK || !bytes.Equal(got.body, want) {
		t.Fatalf("got %+v, want the server's answer %s", got, want)
	}
}

// TestFaultSlowCanceled: a request canceled while it waits is dropped:
// the handler returns without ever asking the wrapped server.
func TestFaultSlowCanceled(t *testing.T) {
	var calls int
	var mu sync.Mutex
	f := NewFaults(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
	}))
	returned := make(chan struct{}, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.ServeHTTP(w, r)
		returned <- struct{}{}
	}))
	defer ts.Close()
	f.SetFault(Fault{Mode: FaultSlow, Delay: 3 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r, _ := http.NewRequestWithContext(ctx, http.MethodGet, ts.URL+"/api/v1/users/me", nil)
	if resp, err := ts.Client().Do(r); err == nil {
		resp.Body.Close()
		t.Fatalf("got an answer %d, want the request canceled", resp.StatusCode)
	}
	select {
	case <-returned:
	case <-time.After(30 * time.Second):
		t.Fatal("the handler did not return after the request was canceled")
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 0 {
		t.Fatalf("the wrapped handler was called %d times after the cancellation", calls)
	}
}

func TestFaultCountAndPath(t *testing.T) {
	e := newFaultEnv(t)
	e.faults.SetFault(Fault{Mode: Fault502, Count: 2, Path: "/api/v1/users/me/presence"})
	// Another path is not faulted and does not use up the count.
	if got := e.do("/api/v1/users/me"); got.status != http.StatusOK {
		t.Fatalf("GET /users/me: %+v, want it passed through", got)
	}
	for i, want := range []int{http.StatusBadGateway, http.StatusBadGateway, http.StatusOK} {
		if got := e.do("/api/v1/users/me/presence"); got.status != want {
			t.Fatalf("presence request %d: status %d, want %d", i, got.status, want)
		}
	}
	if n := e.faults.Faulted(); n != 2 {
		t.Fatalf("Faulted() = %d, want 2", n)
	}
	// Setting a fault again starts its count afresh.
	e.faults.SetFault(Fault{Mode: Fault500, Count: 1})
	for i, want := range []int{http.StatusInternalServerError, http.StatusOK} {
		if got := e.do("/api/v1/users/me"); got.status != want {
			t.Fatalf("request %d after reset: status %d, want %d", i, got.status, want)
		}
	}
}

// TestFaultSwitchConcurrently changes the fault while requests are being
// served; the race detector checks the handler's state, and every answer
// must be one of the two settings'.
func TestFaultSwitchConcurrently(t *testing.T) {
	e := newFaultEnv(t)
	want := e.presenceAnswer()
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			if i%2 == 0 {
				e.faults.SetFault(Fault{Mode: Fault500})
			} else {
				e.faults.SetFault(Fault{})
			}
		}
	}()
	client := &http.Client{Timeout: 10 * time.Second}
	for range 50 {
		resp, err := client.Do(e.request(context.Background(), "/api/v1/users/me/presence"))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		ok := resp.StatusCode == http.StatusOK && bytes.Equal(body, want) ||
			resp.StatusCode == http.StatusInternalServerError && bytes.HasPrefix(body, []byte("<!DOCTYPE html>"))
		if !ok {
			t.Fatalf("answer %d %s is neither setting's", resp.StatusCode, body)
		}
	}
	close(done)
	wg.Wait()
}

func TestFaultModeString(t *testing.T) {
	if got := FaultResetMidBody.String(); got != "reset-mid-body" {
		t.Fatalf("String() = %q", got)
	}
	if got := FaultMode(99).String(); got != "FaultMode(99)" {
		t.Fatalf("String() = %q", got)
	}
}
