package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The presence routes and the bodies Zulip's clients send.
const (
	apiPath  = "/api/v1/users/me/presence"
	jsonPath = "/json/users/me/presence"

	pingBody   = "new_user_input=false&ping_only=true&status=active"
	slimBody   = "new_user_input=false&ping_only=false&slim_presence=true&status=active"
	legacyBody = "new_user_input=false&ping_only=false&status=active"
)

func modernBody(cursor int64) string {
	return "last_update_id=" + strconv.FormatInt(cursor, 10) + "&new_user_input=false&ping_only=false&status=active"
}

// newClient is a keep-alive client for workers goroutines; it asks for
// gzip and decompresses, as Zulip's clients do.
func newClient(workers int) *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			MaxIdleConns:        4 * workers,
			MaxIdleConnsPerHost: 2 * workers,
			IdleConnTimeout:     90 * time.Second,
		},
	}
}

// presenceRequest builds a presence POST to base (http://127.0.0.1:port);
// host, if set, picks the simulated realm.
func presenceRequest(base, host, path, body string) *http.Request {
	req, err := http.NewRequest(http.MethodPost, base+path, strings.NewReader(body))
	if err != nil {
		panic(err) // the URL is ours
	}
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

func basic(scheme, sep, email, key string) string {
	return scheme + sep + base64.StdEncoding.EncodeToString([]byte(email+":"+key))
}

// setBrowser sets a web app session's credentials: the session and CSRF
// cookies, the CSRF header and the Origin the server checks.
func setBrowser(req *http.Request, cookieName, session, csrf string) {
	req.Header.Set("Cookie", cookieName+"="+session+"; csrftoken="+csrf)
	req.Header.Set("X-CSRFToken", csrf)
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	req.Header.Set("Origin", "http://"+host)
}

const alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randomString(rng *rand.Rand, n int, alphabet string) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

// randomCase flips the case of each ASCII letter of s at random.
func randomCase(rng *rand.Rand, s string) string {
	b := []byte(s)
	for i, c := range b {
		if ('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') && rng.IntN(2) == 0 {
			b[i] = c ^ 0x20
		}
	}
	return string(b)
}

// tally counts answers by whether they were what the request expected.
type tally struct {
	Requests   int64
	OK         int64
	Unexpected map[int]int64    // status → count
	Transport  int64            // transport errors (no answer), races aside
	Causes     map[string]int64 // transport errors by cause, races aside
	// Races are transport errors of a kept-alive connection the server
	// closed during a reload: Caddy shuts the old servers down, which
	// closes their idle connections, and a POST sent on one just then
	// fails (HTTP/1.1's keep-alive race, which Go's client does not retry
	// for a POST). Only errors of that kind at a reload count here.
	Races   int64
	Elapsed time.Duration
}

func (t *tally) add(o tally) {
	t.Requests += o.Requests
	t.OK += o.OK
	t.Transport += o.Transport
	t.Races += o.Races
	for k, v := range o.Causes {
		t.count(&t.Causes, k, v)
	}
	for k, v := range o.Unexpected {
		if t.Unexpected == nil {
			t.Unexpected = map[int]int64{}
		}
		t.Unexpected[k] += v
	}
}

func (t *tally) count(m *map[string]int64, k string, n int64) {
	if *m == nil {
		*m = map[string]int64{}
	}
	(*m)[k] += n
}

// Errors is what the report calls errors: unexpected statuses plus
// transport errors, races at reloads aside.
func (t tally) Errors() int64 {
	n := t.Transport
	for _, v := range t.Unexpected {
		n += v
	}
	return n
}

// describe lists the unexpected statuses and transport errors, as
// "502×3 transport×1 (EOF×1)".
func (t tally) describe() string {
	var parts []string
	for code, n := range t.Unexpected {
		parts = append(parts, fmt.Sprintf("%d×%d", code, n))
	}
	sort.Strings(parts)
	if t.Transport > 0 {
		var causes []string
		for c, n := range t.Causes {
			causes = append(causes, fmt.Sprintf("%s×%d", c, n))
		}
		sort.Strings(causes)
		parts = append(parts, fmt.Sprintf("transport×%d (%s)", t.Transport, strings.Join(causes, ", ")))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// expectation says which statuses a request should get.
type expectation int

const (
	wantOK      expectation = iota // 2xx: valid credentials
	wantRefused                    // 4xx: credentials the server refuses
)

func (e expectation) met(status int) bool {
	if e == wantOK {
		return status/100 == 2
	}
	return status/100 == 4
}

// reloadTimes records when reloads ran, to tell keep-alive races apart.
type reloadTimes struct {
	mu      sync.Mutex
	windows [][2]time.Time
}

// reloadSlack is how long after a reload returned a closed connection still
// counts as closed by it.
const reloadSlack = 2 * time.Second

func (rt *reloadTimes) add(from, to time.Time) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	rt.windows = append(rt.windows, [2]time.Time{from, to.Add(reloadSlack)})
}

// during reports whether an error at t, of a request sent at sent, may
// come from a reload: one ran between the two, or is still running.
func (rt *reloadTimes) during(sent, t time.Time, running bool) bool {
	if running {
		return true
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, w := range rt.windows {
		if !w[0].After(t) && !w[1].Before(sent) {
			return true
		}
	}
	return false
}

// reloads are the reloads of this run; reloading is set while one runs.
var (
	reloads   reloadTimes
	reloading atomic.Bool
)

// closedByServer reports an error of a connection the server closed.
func closedByServer(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		strings.Contains(err.Error(), "server closed idle connection")
}

// do sends req and reads its answer to the end; with keep set, it returns
// the body.
func do(client *http.Client, req *http.Request, want expectation, keep bool, t *tally) []byte {
	t.Requests++
	reused := false
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
	}))
	sent := time.Now()
	fail := func(err error) {
		if reused && closedByServer(err) && reloads.during(sent, time.Now(), reloading.Load()) {
			t.Races++
			return
		}
		t.Transport++
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		cause := err.Error()
		if closedByServer(err) {
			cause = "connection closed by the server"
		}
		t.count(&t.Causes, cause, 1)
	}
	resp, err := client.Do(req)
	if err != nil {
		fail(err)
		return nil
	}
	var body []byte
	if keep {
		body, err = io.ReadAll(resp.Body)
	} else {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	switch {
	case err != nil:
		fail(err)
	case want.met(resp.StatusCode):
		t.OK++
	default:
		if t.Unexpected == nil {
			t.Unexpected = map[int]int64{}
		}
		t.Unexpected[resp.StatusCode]++
	}
	return body
}

// flood sends n requests from workers goroutines; mk builds request i with
// a per-worker random source.
func flood(client *http.Client, n, workers int, want expectation, mk func(rng *rand.Rand, i int) *http.Request) tally {
	var mu sync.Mutex
	var total tally
	var next sync.Mutex
	i := 0
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 0x666c6f6f64))
			var t tally
			for {
				next.Lock()
				j := i
				i++
				next.Unlock()
				if j >= n {
					break
				}
				do(client, mk(rng, j), want, false, &t)
			}
			mu.Lock()
			total.add(t)
			mu.Unlock()
		}()
	}
	wg.Wait()
	total.Elapsed = time.Since(start)
	return total
}

// Sites of the load run.
const (
	module = iota
	plain
	numSites
)

// loadClient is one Zulip client of the load run: an API client (Basic
// credentials) or a browser session. Each is driven by one worker.
type loadClient struct {
	browser               bool
	email, key            string // API client
	cookie, session, csrf string // browser
	cursor                [numSites]int64
}

// loadKind is one kind of request of the mix, with its share.
type loadKind struct {
	name   string
	weight int
}

var apiMix = []loadKind{{"ping", 50}, {"modern", 18}, {"slim", 12}, {"legacy", 3}, {"invalid", 17}}
var webMix = []loadKind{{"ping", 60}, {"modern", 25}, {"invalid", 15}}

func pick(rng *rand.Rand, mix []loadKind) string {
	total := 0
	for _, k := range mix {
		total += k.weight
	}
	x := rng.IntN(total)
	for _, k := range mix {
		if x < k.weight {
			return k.name
		}
		x -= k.weight
	}
	return mix[len(mix)-1].name
}

// request builds one request of kind for c to the site at base.
func (c *loadClient) request(rng *rand.Rand, site int, base, kind string) (*http.Request, expectation) {
	path, body, want := apiPath, "", wantOK
	if c.browser {
		path = jsonPath
	}
	switch kind {
	case "ping", "invalid":
		body = pingBody
	case "modern":
		body = modernBody(c.cursor[site])
	case "slim":
		body = slimBody
	case "legacy":
		body = legacyBody
	}
	req := presenceRequest(base, "", path, body)
	switch {
	case c.browser && kind == "invalid":
		setBrowser(req, c.cookie, randomString(rng, 32, alnum[:36]), c.csrf)
		want = wantRefused
	case c.browser:
		setBrowser(req, c.cookie, c.session, c.csrf)
	case kind == "invalid":
		req.Header.Set("Authorization", basic("Basic", " ", c.email, randomString(rng, 32, alnum)))
		want = wantRefused
	default:
		req.Header.Set("Authorization", basic("Basic", " ", c.email, c.key))
	}
	return req, want
}

// lastUpdateID finds presence_last_update_id in a presence answer.
func lastUpdateID(body []byte) (int64, bool) {
	const field = `"presence_last_update_id":`
	i := bytes.Index(body, []byte(field))
	if i < 0 {
		return 0, false
	}
	rest := body[i+len(field):]
	end := bytes.IndexAny(rest, ",}")
	if end < 0 {
		return 0, false
	}
	id, err := strconv.ParseInt(string(bytes.TrimSpace(rest[:end])), 10, 64)
	return id, err == nil
}

// load drives clients until ctx ends: each worker owns a share of the
// clients and sends each request it makes to both sites, in random order,
// so that the two sites see the same traffic at the same moments.
func load(ctx context.Context, client *http.Client, bases [numSites]string, clients []*loadClient, workers int) [numSites]tally {
	var mu sync.Mutex
	var out [numSites]tally
	start := time.Now()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 0x6c6f6164))
			var mine []*loadClient
			for i := w; i < len(clients); i += workers {
				mine = append(mine, clients[i])
			}
			var t [numSites]tally
			for ctx.Err() == nil && len(mine) > 0 {
				c := mine[rng.IntN(len(mine))]
				mix := apiMix
				if c.browser {
					mix = webMix
				}
				kind := pick(rng, mix)
				first := rng.IntN(numSites)
				for k := range numSites {
					site := (first + k) % numSites
					req, want := c.request(rng, site, bases[site], kind)
					body := do(client, req, want, kind == "modern", &t[site])
					if id, ok := lastUpdateID(body); ok {
						c.cursor[site] = id
					}
				}
			}
			mu.Lock()
			for s := range numSites {
				out[s].add(t[s])
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	for s := range numSites {
		out[s].Elapsed = time.Since(start)
	}
	return out
}
