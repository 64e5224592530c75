package caddymodule

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// Ports of the two sites of a fault rig.
const (
	modulePort = 9080 // zulip_presence, then reverse_proxy
	plainPort  = 9081 // reverse_proxy alone
)

// hangTimeout is how long a client waits for an answer before the test
// calls the request hung. It only detects hangs; nothing is timed.
const hangTimeout = 5 * time.Second

// goroutineSlack is how many goroutines above the baseline still count as
// settled: background work of Caddy and the runtime comes and goes.
const goroutineSlack = 8

// faultRig is Caddy with two sites, one with zulip_presence and one with
// plain reverse_proxy, in front of the same simulated Zulip behind a
// fault-injecting handler. The realm's clock stands still, so that both
// sites get byte-identical answers for the same state.
type faultRig struct {
	sim      *zuliptest.Server
	realm    *zuliptest.Realm
	faults   *zuliptest.Faults
	upstream *httptest.Server
	conns    *upstreamConns
	tester   *caddytest.Tester
	// client waits at most hangTimeout for a whole exchange; it opens a
	// connection per request, so that a broken one is never reused and
	// nothing stays idle.
	client   *http.Client
	baseline int // goroutines once the rig is up and quiet
}

// faultRigs numbers the rigs of this process. Each gets a store of its
// own: stores outlive configurations, and with -count a test's users come
// back with the same credentials, so they would find the sessions of the
// run before.
var faultRigs atomic.Int64

func newFaultRig(t *testing.T) *faultRig {
	t.Helper()
	clock := time.Date(2025, 3, 10, 9, 30, 15, 250000000, time.UTC)
	sim := zuliptest.New(func() time.Time { return clock })
	rig := &faultRig{
		sim:    sim,
		realm:  sim.DefaultRealm(),
		faults: zuliptest.NewFaults(sim),
		conns:  &upstreamConns{state: map[net.Conn]http.ConnState{}},
		client: &http.Client{
			Transport: &http.Transport{DisableKeepAlives: true, DisableCompression: true},
			Timeout:   hangTimeout,
		},
	}
	rig.upstream = httptest.NewUnstartedServer(rig.faults)
	rig.upstream.Config.ConnState = rig.conns.track
	rig.upstream.Start()
	t.Cleanup(rig.upstream.Close)
	rig.tester = caddytest.NewTester(t)
	rig.tester.InitServer(globalOptions+fmt.Sprintf(`
http://:%[3]d {
	zulip_presence {
		cache_name %[2]s
	}
	reverse_proxy %[1]s
}
http://:%[4]d {
	reverse_proxy %[1]s
}
`, rig.upstream.Listener.Addr(), fmt.Sprintf("%s-%d", t.Name(), faultRigs.Add(1)), modulePort, plainPort), "caddyfile")
	// One request through each site starts whatever each starts lazily.
	u := rig.addUser("warmup")
	for _, port := range []int{modulePort, plainPort} {
		if x := rig.exchange(t, port, rig.realm.BasicAuth(u.ID), "", "status=active&ping_only=true"); x.broken() || x.status != http.StatusOK {
			t.Fatalf("warm-up ping on :%d: %v", port, x)
		}
	}
	rig.quiesce()
	rig.baseline = runtime.NumGoroutine()
	t.Logf("baseline: %d goroutines", rig.baseline)
	return rig
}

// addUser adds a user to the default realm whose join lies in the past.
func (rig *faultRig) addUser(name string) zuliptest.User {
	name = strings.NewReplacer("/", "-", " ", "-").Replace(name)
	u := rig.realm.AddUser(name+"@zulip.example", name, zuliptest.RoleMember)
	rig.realm.Advance(time.Hour)
	return u
}

// exchangeResult is what a client saw of one request: an answer, an
// answer whose body broke off, or no answer at all.
type exchangeResult struct {
	status  int
	header  http.Header
	body    []byte
	doErr   error // no answer (or none within hangTimeout)
	readErr error // the body broke off (or did not end within hangTimeout)
}

func (x exchangeResult) broken() bool { return x.doErr != nil || x.readErr != nil }

func (x exchangeResult) hung() bool {
	var ne net.Error
	return errors.As(x.doErr, &ne) && ne.Timeout() || errors.As(x.readErr, &ne) && ne.Timeout()
}

func (x exchangeResult) String() string {
	switch {
	case x.doErr != nil:
		return fmt.Sprintf("no answer: %v", x.doErr)
	case x.readErr != nil:
		return fmt.Sprintf("%d, body broken after %d bytes: %v", x.status, len(x.body), x.readErr)
	}
	body := x.body
	if len(body) > 200 {
		body = append(body[:200:200], "…"...)
	}
	return fmt.Sprintf("%d %q", x.status, body)
}

func (x exchangeResult) answer() zuliptest.Answer {
	return zuliptest.Answer{Status: x.status, Header: x.header, Body: x.body}
}

// exchange posts a presence request to a site and reads the whole answer.
func (rig *faultRig) exchange(t *testing.T, port int, auth, host, form string) exchangeResult {
	t.Helper()
	r := presenceReq(t, port, auth, "", strings.NewReader(form), "application/x-www-form-urlencoded")
	if host != "" {
		r.Host = host
	}
	resp, err := rig.client.Do(r)
	if err != nil {
		return exchangeResult{doErr: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return exchangeResult{status: resp.StatusCode, header: resp.Header, body: body, readErr: err}
}

// requestsCounted sums caddy_zulip_presence_requests_total over all
// outcomes of one kind.
func (rig *faultRig) requestsCounted(t *testing.T, kind string) float64 {
	t.Helper()
	resp, err := rig.client.Get("http://localhost:2999/metrics")
	if err != nil {
		t.Fatalf("reading metrics: %v", err)
	}
	defer resp.Body.Close()
	var sum float64
	prefix := `caddy_zulip_presence_requests_total{kind="` + kind + `",`
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, prefix) {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading metrics: %v", err)
	}
	return sum
}

// quiesce closes every connection the test opened, directly or through
// Caddy: the clients' idle ones, and Caddy's idle ones to the upstream.
//
// Caddy's are closed from the upstream's end, so quiesce waits until
// Caddy has closed its end too (upstreamConns.closeIdle): until then its
// transport still holds the connection as idle and may send the next
// request on it. A POST sent on a connection the upstream has already
// closed fails (EOF or broken pipe) and is not retried, by Go's transport
// (not replayable) or by reverse_proxy (no retries configured, and not a
// GET), so plain reverse_proxy answers 502 to a request that never
// reached the upstream.
func (rig *faultRig) quiesce() {
	rig.client.CloseIdleConnections()
	rig.tester.Client.CloseIdleConnections()
	http.DefaultClient.CloseIdleConnections()
	if !rig.conns.closeIdle(hangTimeout) {
		// Caddy did not close its end in time: close ours at least, so
		// that checkGoroutines sees what is left and reports it.
		rig.upstream.CloseClientConnections()
	}
}

// upstreamConns follows the upstream server's connections through its
// ConnState hook.
type upstreamConns struct {
	mu    sync.Mutex
	state map[net.Conn]http.ConnState // open connections, not hijacked
	gone  chan struct{}               // closed (and replaced) when one ends
}

func (u *upstreamConns) track(c net.Conn, s http.ConnState) {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch s {
	case http.StateClosed, http.StateHijacked:
		delete(u.state, c)
		if u.gone != nil {
			close(u.gone)
			u.gone = nil
		}
	default:
		u.state[c] = s
	}
}

// closeIdle closes the writing half of every connection that waits for a
// request (idle, or new and not yet used), and waits at most d until the
// client has closed each: a client's transport that reads the end of
// file marks its connection broken, so it never sends on it again, and
// then closes it, which ends the server's side. It reports whether every
// such connection ended in time. The test sends nothing while it runs,
// so no connection is in the middle of a request.
func (u *upstreamConns) closeIdle(d time.Duration) bool {
	u.mu.Lock()
	waiting := map[net.Conn]bool{}
	for c, s := range u.state {
		if s != http.StateIdle && s != http.StateNew {
			continue
		}
		if cw, ok := c.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			waiting[c] = true
		} else {
			_ = c.Close()
		}
	}
	u.mu.Unlock()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	for {
		u.mu.Lock()
		for c := range waiting {
			if _, open := u.state[c]; !open {
				delete(waiting, c)
			}
		}
		if len(waiting) == 0 {
			u.mu.Unlock()
			return true
		}
		if u.gone == nil {
			u.gone = make(chan struct{})
		}
		gone := u.gone
		u.mu.Unlock()
		select {
		case <-gone:
		case <-deadline.C:
			return false
		}
	}
}

// checkGoroutines fails the test unless the goroutine count comes back
// near the baseline within a few seconds once all connections are closed:
// nothing may be left waiting after a request has ended.
func (rig *faultRig) checkGoroutines(t *testing.T, when string) {
	t.Helper()
	limit := rig.baseline + goroutineSlack
	deadline := time.Now().Add(hangTimeout)
	for {
		rig.quiesce()
		n := runtime.NumGoroutine()
		if n <= limit {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("%s: %d goroutines, baseline %d (+%d allowed); the stacks:\n%s", when, n, rig.baseline, goroutineSlack, buf)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// presenceKind is one kind of presence request, as its metric label names it.
type presenceKind struct {
	name      string
	form      string
	converted bool // the handler answers it from an incremental fetch
}

var presenceKinds = []presenceKind{
	{name: "ping", form: "status=active&ping_only=true"},
	{name: "slim", form: "status=active&slim_presence=true", converted: true},
	{name: "legacy", form: "status=active", converted: true},
	{name: "modern", form: "status=active&last_update_id=-1"},
}

// sameAsPlain fails the test unless the module's client saw what plain
// reverse_proxy's client saw: the same answer when there was one, some
// broken exchange when plain's was broken.
func sameAsPlain(t *testing.T, what string, module, plain exchangeResult, converted bool) {
	t.Helper()
	if plain.broken() {
		if !module.broken() {
			t.Errorf("%s: module answered %v; plain reverse_proxy's exchange broke: %v", what, module, plain)
			return
		}
		if module.doErr == nil && plain.doErr == nil && module.status != plain.status {
			t.Errorf("%s: module's broken answer has status %d, plain's %d", what, module.status, plain.status)
		}
		if (module.doErr == nil) != (plain.doErr == nil) {
			t.Logf("%s: both broke, differently: module %v; plain %v", what, module, plain)
		}
		return
	}
	if module.broken() {
		t.Errorf("%s: module's exchange broke (%v); plain answered %v", what, module, plain)
		return
	}
	if err := zuliptest.Compare(plain.answer(), module.answer(), converted && plain.status == http.StatusOK); err != nil {
		t.Errorf("%s: module's answer differs from plain reverse_proxy's: %v\nmodule: %v\nplain:  %v", what, err, module, plain)
	}
}

// TestFaultsUpstream sends every kind of presence request while the
// upstream fails in each way, to Caddy with the module and to Caddy with
// plain reverse_proxy, and checks that the module's client sees what
// plain's sees, that the request is counted, and that once the upstream
// is healthy again the same session answers at once, nothing is left
// waiting, and it keeps working.
func TestFaultsUpstream(t *testing.T) {
	rig := newFaultRig(t)
	faults := []zuliptest.Fault{
		{Mode: zuliptest.FaultNone},
		{Mode: zuliptest.FaultResetMidBody},
		{Mode: zuliptest.FaultResetBeforeHeaders},
		{Mode: zuliptest.FaultSlow, Delay: 300 * time.Millisecond},
		{Mode: zuliptest.FaultTruncated},
		{Mode: zuliptest.FaultNotJSON},
		{Mode: zuliptest.Fault500},
		{Mode: zuliptest.Fault502},
	}
	ping := presenceKinds[0]
	for _, fault := range faults {
		fault.Path = apiPresencePath
		for _, kind := range presenceKinds {
			t.Run(fault.Mode.String()+"/"+kind.name, func(t *testing.T) {
				u := rig.addUser(t.Name())
				auth := rig.realm.BasicAuth(u.ID)

				// The fault: the session's first request, so it is forwarded.
				counted := rig.requestsCounted(t, kind.name)
				faulted := rig.faults.Faulted()
				rig.faults.SetFault(fault)
				module := rig.exchange(t, modulePort, auth, "", kind.form)
				reached := rig.faults.Faulted() - faulted
				plain := rig.exchange(t, plainPort, auth, "", kind.form)
				rig.faults.SetFault(zuliptest.Fault{})
				t.Logf("module: %v", module)
				t.Logf("plain:  %v", plain)
				if fault.Mode != zuliptest.FaultNone && reached == 0 {
					t.Errorf("the module's request never reached the faulty upstream")
				}
				if module.hung() || plain.hung() {
					t.Errorf("a request during the fault hung: module %v; plain %v", module, plain)
				}
				sameAsPlain(t, "during the fault", module, plain, kind.converted)
				// The handler records after the answer is sent; give it a moment.
				var delta float64
				for deadline := time.Now().Add(hangTimeout); ; time.Sleep(20 * time.Millisecond) {
					if delta = rig.requestsCounted(t, kind.name) - counted; delta >= 1 || time.Now().After(deadline) {
						break
					}
				}
				if delta != 1 {
					t.Errorf("caddy_zulip_presence_requests_total{kind=%q} grew by %v, want 1", kind.name, delta)
				}

				// Recovery: the same session's next ping and poll answer.
				x := rig.exchange(t, modulePort, auth, "", ping.form)
				stuck := x.hung()
				if x.broken() || x.status != http.StatusOK {
					t.Errorf("the session's first ping after the fault: %v, want 200 within %v", x, hangTimeout)
				} else if !rig.realm.PresenceRow(u.ID).Exists {
					// No write of this user reached Zulip yet: the fault
					// cannot have taught the handler one happened.
					t.Errorf("the first ping after the fault was answered without Zulip storing the user's presence")
				}
				poll := kind
				if !poll.converted && poll.name != "modern" {
					poll = presenceKinds[1]
				}
				x = rig.exchange(t, modulePort, auth, "", poll.form)
				y := rig.exchange(t, plainPort, auth, "", poll.form)
				if x.broken() || x.status != http.StatusOK {
					t.Errorf("the session's first %s poll after the fault: %v, want 200 within %v", poll.name, x, hangTimeout)
				} else {
					sameAsPlain(t, "poll after the fault", x, y, poll.converted)
				}
				rig.checkGoroutines(t, "after the fault")
				if stuck {
					return // the pings below would only wait on the same stuck session
				}

				// Normal use: two pings in a row, as plain answers them.
				for i := range 2 {
					x := rig.exchange(t, modulePort, auth, "", ping.form)
					y := rig.exchange(t, plainPort, auth, "", ping.form)
					if x.broken() || x.status != http.StatusOK {
						t.Errorf("ping %d after recovery: %v, want 200", i+1, x)
						continue
					}
					sameAsPlain(t, fmt.Sprintf("ping %d after recovery", i+1), x, y, false)
				}
			})
		}
	}
}

// TestFaultsClientGone: clients that close their socket while a large
// forwarded answer streams to them must not leave the session waiting;
// its next ping answers at once.
func TestFaultsClientGone(t *testing.T) {
	rig := newFaultRig(t)
	const host = "big.example"
	big := rig.sim.AddRealm(host)
	for i := range 4000 {
		o := big.AddUser(fmt.Sprintf("user%d@big.example", i), "x", zuliptest.RoleMember)
		big.SetPresenceRow(o.ID, big.Now(), big.Now())
	}
	u := big.AddUser("reader@big.example", "Reader", zuliptest.RoleMember)
	big.Advance(time.Hour)
	auth := big.BasicAuth(u.ID)
	const modern = "status=active&last_update_id=-1"
	full := rig.exchange(t, plainPort, auth, host, modern)
	if full.broken() || full.status != http.StatusOK || len(full.body) < 200<<10 {
		t.Fatalf("the full modern answer through plain reverse_proxy: %d bytes, %v; want 200 and a large body", len(full.body), full.doErr)
	}
	if x := rig.exchange(t, modulePort, auth, host, "status=active&ping_only=true"); x.broken() || x.status != http.StatusOK {
		t.Fatalf("first ping: %v", x)
	}
	counted := rig.requestsCounted(t, "modern")

	const clients = 40
	for i := range clients {
		conn, err := net.Dial("tcp", fmt.Sprintf("localhost:%d", modulePort))
		if err != nil {
			t.Fatal(err)
		}
		// A small receive buffer, as a slow client has: the answer cannot
		// all sit in socket buffers when the client goes.
		_ = conn.(*net.TCPConn).SetReadBuffer(4 << 10)
		r := presenceReq(t, modulePort, auth, "", strings.NewReader(modern), "application/x-www-form-urlencoded")
		r.Host = host
		_ = conn.SetDeadline(time.Now().Add(hangTimeout))
		if err := r.Write(conn); err != nil {
			t.Fatalf("client %d: %v", i, err)
		}
		head := make([]byte, 64)
		if _, err := io.ReadFull(conn, head); err != nil || !bytes.HasPrefix(head, []byte("HTTP/1.1 200 ")) {
			t.Fatalf("client %d: read %q, %v", i, head, err)
		}
		// Unread data in the receive buffer: closing sends a reset.
		conn.Close()
	}

	x := rig.exchange(t, modulePort, auth, host, "status=active&ping_only=true")
	if x.broken() || x.status != http.StatusOK {
		t.Errorf("the session's ping after %d clients went away: %v, want 200 within %v", clients, x, hangTimeout)
	}
	var delta float64
	for deadline := time.Now().Add(hangTimeout); ; time.Sleep(20 * time.Millisecond) {
		if delta = rig.requestsCounted(t, "modern") - counted; delta >= clients || time.Now().After(deadline) {
			break
		}
	}
	if delta != clients {
		t.Errorf("caddy_zulip_presence_requests_total{kind=\"modern\"} grew by %v, want %d", delta, clients)
	}
	rig.checkGoroutines(t, "after the clients went away")
}
