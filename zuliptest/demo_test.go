package zuliptest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestNewDemo(t *testing.T) {
	clock := newClock()
	cfg := DemoConfig{Users: 400, Online: 40, Seed: 7, Now: clock.Now}
	a, b := NewDemo(cfg), NewDemo(cfg)
	ua, ub := a.DefaultRealm().Users(), b.DefaultRealm().Users()
	if !reflect.DeepEqual(ua, ub) {
		t.Fatal("users differ for one seed")
	}
	if len(ua) != 400 || ua[0].Email != DemoEmail || ua[0].APIKey != DemoAPIKey || ua[1].Email != "iago@zulip.example" {
		t.Fatalf("users %v…", ua[:2])
	}
	if !strings.HasPrefix(ua[399].Email, "user400@") {
		t.Fatalf("last user %v", ua[399])
	}
	recent, old, fresh := 0, 0, 0
	now := clock.Now()
	for _, u := range ua {
		ra, rb := a.DefaultRealm().PresenceRow(u.ID), b.DefaultRealm().PresenceRow(u.ID)
		if ra != rb {
			t.Fatalf("rows differ for one seed: %+v %+v", ra, rb)
		}
		switch age := now.Sub(ra.LastConnected); {
		case !ra.Exists:
		case age < time.Minute:
			fresh++
			recent++
		case age < 14*24*time.Hour:
			recent++
		default:
			old++
		}
	}
	if fresh != 40 || recent < 270 || recent > 330 || old == 0 {
		t.Fatalf("%d fresh, %d within 14 days, %d older of 400", fresh, recent, old)
	}
	if st := a.DefaultRealm().Stats(); st.RowsWritten != 0 {
		t.Fatalf("demo starts with stats %+v", st)
	}
	if c := NewDemo(DemoConfig{Users: 400, Online: 40, Seed: 8, Now: clock.Now}); reflect.DeepEqual(c.DefaultRealm().PresenceRow(5), a.DefaultRealm().PresenceRow(5)) &&
		reflect.DeepEqual(c.DefaultRealm().PresenceRow(6), a.DefaultRealm().PresenceRow(6)) {
		t.Fatal("another seed gives the same rows")
	}
}

func TestDemoDefaults(t *testing.T) {
	s := NewDemo(DemoConfig{})
	if n := len(s.DefaultRealm().Users()); n != DefaultDemoUsers {
		t.Fatalf("%d users", n)
	}
	if n := len(NewDemo(DemoConfig{Users: 3}).demo.online); n != 3 {
		t.Fatalf("online not capped: %d", n)
	}
}

func TestDemoServesHamlet(t *testing.T) {
	s := NewDemo(DemoConfig{Users: 20, Online: 5})
	ts := httptest.NewServer(s)
	defer ts.Close()
	e := &env{t: t, ts: ts, srv: s, rm: s.DefaultRealm()}
	r := e.request("POST", presencePath, "status=active&slim_presence=true", basic(DemoEmail+":"+DemoAPIKey))
	if p := r.presences(t); len(p) < 5 {
		t.Fatalf("%d presences", len(p))
	}
}

func TestDemoActivity(t *testing.T) {
	clock := newClock()
	s := NewDemo(DemoConfig{Users: 50, Online: 10, Now: clock.Now})
	rm := s.DefaultRealm()
	seq := func() int64 {
		defer rm.lock()()
		return rm.seq
	}
	start := seq()
	onlineAt := func() map[int64]bool {
		s.demo.mu.Lock()
		defer s.demo.mu.Unlock()
		m := map[int64]bool{}
		for _, cl := range s.demo.online {
			m[cl.u.ID] = true
		}
		return m
	}
	first := onlineAt()
	for range 20 * 12 { // 20 simulated minutes, a step every 5 s
		clock.Advance(5 * time.Second)
		s.demo.step(rm.Now())
	}
	if seq()-start < 10*15 {
		t.Fatalf("only %d writes in 20 minutes of 10 online users", seq()-start)
	}
	if reflect.DeepEqual(first, onlineAt()) {
		t.Fatal("nobody came or went")
	}
	if len(onlineAt()) != 10 {
		t.Fatalf("%d online", len(onlineAt()))
	}
	// Online users look online to a client.
	now := rm.Now()
	fresh := 0
	for id := range onlineAt() {
		if row := rm.PresenceRow(id); now.Sub(row.LastConnected) <= 2*time.Minute {
			fresh++
		}
	}
	if fresh < 8 {
		t.Fatalf("%d of 10 online users have a fresh row", fresh)
	}
	if rm.Stats().RowsWritten == 0 {
		t.Fatal("background writes are not counted")
	}
}

func TestRunActivity(t *testing.T) {
	clock := newClock()
	s := NewDemo(DemoConfig{Users: 20, Online: 5, Now: clock.Now})
	s.demo.tick = time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.RunActivity(ctx)
		close(done)
	}()
	rm := s.DefaultRealm()
	deadline := time.Now().Add(5 * time.Second)
	start := rm.Stats().RowsWritten
	for rm.Stats().RowsWritten == start {
		clock.Advance(time.Minute)
		if time.Now().After(deadline) {
			t.Fatal("no background write")
		}
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunActivity did not stop")
	}

	quiet := New(nil)
	stopped := make(chan struct{})
	go func() {
		quiet.RunActivity(context.Background())
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("RunActivity on a quiet server did not return")
	}
}

// TestConcurrentUse mixes API requests, control requests, Go API calls and
// the background activity, for the race detector, and checks every answer.
func TestConcurrentUse(t *testing.T) {
	s := NewDemo(DemoConfig{Users: 60, Online: 20})
	s.demo.tick = time.Millisecond
	ts := httptest.NewServer(s)
	defer ts.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.RunActivity(ctx)
	rm := s.DefaultRealm()
	users := rm.Users()
	e := &env{t: t, ts: ts, srv: s, rm: rm}
	const goroutines, rounds = 8, 40
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			u := users[g]
			auth := "Authorization: " + rm.BasicAuth(u.ID)
			for i := range rounds {
				var r resp
				var err error
				var want string // a key the answer must have
				switch i % 5 {
				case 0:
					r, err = e.fetch("POST", "/api/v1/users/me/presence", "status=active&last_update_id=-1", auth)
					want = "presence_last_update_id"
				case 1:
					r, err = e.fetch("POST", "/api/v1/users/me/presence", "status=idle", auth)
					want = "presences"
				case 2:
					r, err = e.fetch("GET", "/api/v1/users", "", auth)
					want = "members"
				case 3:
					r, err = e.fetch("GET", "/_sim/stats", "")
					want = "requests"
				case 4:
					rm.SetPresenceEnabled(users[10+g].ID, i%2 == 0)
					rm.Stats()
					continue
				}
				if err == nil {
					err = checkAnswer(r, want)
				}
				if err != nil {
					t.Errorf("goroutine %d, request %d: %v", g, i, err)
				}
			}
		})
	}
	wg.Wait()
	st := rm.Stats()
	if st.Requests["presence"] != goroutines*rounds*2/5 || st.Requests["presence_error"] != 0 || st.Requests["users"] != goroutines*rounds/5 {
		t.Fatalf("stats %+v", st)
	}
}

// checkAnswer reports what is wrong with an answer that should be a 200
// JSON object with key want, and a successful one for the API.
func checkAnswer(r resp, want string) error {
	if r.status != http.StatusOK {
		return fmt.Errorf("status %d: %s", r.status, r.body)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(r.body), &m); err != nil {
		return fmt.Errorf("%v: %s", err, r.body)
	}
	if _, ok := m[want]; !ok {
		return fmt.Errorf("no %q in %s", want, r.body)
	}
	if res, ok := m["result"]; ok && string(res) != `"success"` {
		return fmt.Errorf("result %s: %s", res, r.body)
	}
	return nil
}
