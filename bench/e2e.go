package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy" // reverse_proxy

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// E2EConfig bounds the end-to-end run.
type E2EConfig struct {
	Users    int           // users of the upstream realm
	Active   int           // of them with a row within 14 days
	Clients  int           // users the load generator polls as
	Workers  int           // concurrent load generators
	Duration time.Duration // measured phase
	MaxPairs int           // bound on request pairs
	// Weights is the share of each request kind in the load; all zero
	// means e2eMix.
	Weights [numE2EKinds]float64
}

// weights is the load's share of each request kind.
func (c E2EConfig) weights() [numE2EKinds]float64 {
	if c.Weights == ([numE2EKinds]float64{}) {
		return e2eMix
	}
	return c.Weights
}

// Request kinds of the end-to-end run.
const (
	e2ePing   = iota // ping_only: mostly answered locally by the module
	e2eSlim          // zulip-flutter's slim full poll: converted by the module
	e2eModern        // the web app's incremental poll: forwarded unchanged
	numE2EKinds
)

var e2eKindNames = [numE2EKinds]string{"ping (ping_only)", "slim full poll (converted)", "incremental poll (forwarded)"}

// only makes the end-to-end load the named kinds, in equal shares.
func (c *E2EConfig) only(kinds string) error {
	if kinds == "" {
		return nil
	}
	var w [numE2EKinds]float64
	for _, name := range strings.Split(kinds, ",") {
		k := slices.Index(e2eKindFlags[:], strings.TrimSpace(name))
		if k < 0 {
			return fmt.Errorf("unknown end-to-end request kind %q (want ping, slim or forwarded)", name)
		}
		w[k] = 1
	}
	c.Weights = w
	return nil
}

// e2eKindFlags name the kinds on the command line.
var e2eKindFlags = [numE2EKinds]string{"ping", "slim", "forwarded"}

// e2eMix is the share of each kind in the default load.
var e2eMix = [numE2EKinds]float64{0.4, 0.3, 0.3}

// Sites of the end-to-end run.
const (
	siteModule = iota // zulip_presence + reverse_proxy
	sitePlain         // reverse_proxy alone
	numSites
)

// E2EStats are the latencies of one kind on one site.
type E2EStats struct {
	N          int
	Errors     int
	P50, P99   time.Duration
	Mean       time.Duration
	Throughput float64 // requests per second per busy worker × workers
}

// E2EResult is the end-to-end table.
type E2EResult struct {
	Config  E2EConfig
	Stats   [numE2EKinds][numSites]E2EStats
	Elapsed time.Duration
	Pairs   int
}

// e2eSample is one measured request.
type e2eSample struct {
	kind, site int
	d          time.Duration
	ok         bool
}

// e2eUser is one client identity of the load generator, owned by one
// worker; cursors are per site, as each site is a separate path to Zulip.
type e2eUser struct {
	auth   string
	cursor [numSites]int64
}

// runE2E puts Caddy in front of one simulated Zulip twice, with and
// without zulip_presence, and measures the same load through both.
func runE2E(cfg E2EConfig, seed uint64, progress func(string)) (*E2EResult, error) {
	up, users := e2eUpstream(cfg, seed)
	defer up.Close()
	ports, err := freePorts(numSites)
	if err != nil {
		return nil, err
	}
	if err := caddy.Load(e2eConfig(ports, up.Listener.Addr().String()), true); err != nil {
		return nil, fmt.Errorf("loading Caddy: %v", err)
	}
	defer func() { _ = caddy.Stop() }()
	tr := &http.Transport{MaxIdleConnsPerHost: 4 * cfg.Workers, DisableCompression: true}
	defer tr.CloseIdleConnections()
	g := &e2eGen{cfg: cfg, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}, users: users}
	for s, p := range ports {
		g.base[s] = "http://127.0.0.1:" + strconv.Itoa(p)
	}
	progress("e2e: warming up")
	g.warmUp()
	progress("e2e: measuring")
	start := time.Now()
	samples := g.measure(seed)
	res := &E2EResult{Config: cfg, Elapsed: time.Since(start), Pairs: len(samples) / numSites}
	res.Stats = summarize(samples, cfg.Workers)
	return res, nil
}

// e2eUpstream starts the simulated Zulip on a loopback listener, seeded
// like the twin's realms, and returns the client identities.
func e2eUpstream(cfg E2EConfig, seed uint64) (*httptest.Server, []*e2eUser) {
	sim := zuliptest.New(nil)
	realm := sim.DefaultRealm()
	rng := rand.New(rand.NewPCG(seed, 0xe2e))
	now := time.Now().Truncate(time.Second)
	var users []*e2eUser
	for i := range cfg.Users {
		u := realm.AddUser(fmt.Sprintf("%s.%d@zulip.example", firstNames[i%len(firstNames)], i), "user", zuliptest.RoleMember)
		if i < cfg.Active {
			connected := now.Add(-randDuration(rng, 5*time.Minute, 14*24*time.Hour))
			realm.SetPresenceRow(u.ID, connected, connected.Add(-randDuration(rng, 0, time.Hour)))
		}
		if i < cfg.Clients {
			users = append(users, &e2eUser{auth: realm.BasicAuth(u.ID), cursor: [numSites]int64{-1, -1}})
		}
	}
	return httptest.NewServer(sim), users
}

// freePorts finds n free loopback ports.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// e2eConfig is the Caddy JSON config: admin endpoint off and not
// persisted, only errors logged, two loopback HTTP sites in front of the
// same upstream.
func e2eConfig(ports []int, upstream string) []byte {
	proxy := map[string]any{"handler": "reverse_proxy", "upstreams": []any{map[string]any{"dial": upstream}}}
	server := func(port int, handlers ...any) map[string]any {
		return map[string]any{
			"listen":          []string{"127.0.0.1:" + strconv.Itoa(port)},
			"routes":          []any{map[string]any{"handle": handlers}},
			"automatic_https": map[string]any{"disable": true},
		}
	}
	presence := map[string]any{"handler": "zulip_presence", "cache_name": fmt.Sprintf("bench-e2e-%d", time.Now().UnixNano())}
	cfg := map[string]any{
		"admin":   map[string]any{"disabled": true, "config": map[string]any{"persist": false}},
		"logging": quietLogging,
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{
			"module": server(ports[siteModule], presence, proxy),
			"plain":  server(ports[sitePlain], proxy),
		}}},
	}
	b, _ := json.Marshal(cfg) // maps of strings and numbers always encode
	return b
}

// quietLogging makes Caddy log errors only.
var quietLogging = map[string]any{"logs": map[string]any{"default": map[string]any{"level": "ERROR"}}}

// e2eGen is the load generator.
type e2eGen struct {
	cfg    E2EConfig
	client *http.Client
	base   [numSites]string
	users  []*e2eUser
}

// warmUp sends each user's first requests, unmeasured: the module's first
// poll of a session is a full fetch, and its first ping is forwarded.
func (g *e2eGen) warmUp() {
	for _, u := range g.users {
		for s := range numSites {
			for k := range numE2EKinds {
				g.do(s, k, u)
			}
		}
	}
}

// measure runs the workers until the duration or the pair bound is up.
// Every iteration sends the same request to both sites, in alternating
// order, so that noise on the machine hits both.
func (g *e2eGen) measure(seed uint64) []e2eSample {
	deadline := time.Now().Add(g.cfg.Duration)
	perWorker := g.cfg.MaxPairs / g.cfg.Workers
	out := make([][]e2eSample, g.cfg.Workers)
	var wg sync.WaitGroup
	for w := range g.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(seed, uint64(w)))
			weights := g.cfg.weights()
			mine := g.users[w*len(g.users)/g.cfg.Workers : (w+1)*len(g.users)/g.cfg.Workers]
			for i := 0; i < perWorker && time.Now().Before(deadline); i++ {
				k, u := pickKind(rng, weights), mine[rng.IntN(len(mine))]
				for _, s := range [2][numSites]int{{siteModule, sitePlain}, {sitePlain, siteModule}}[i%2] {
					d, ok := g.do(s, k, u)
					out[w] = append(out[w], e2eSample{kind: k, site: s, d: d, ok: ok})
				}
			}
		}()
	}
	wg.Wait()
	return slices.Concat(out...)
}

func pickKind(rng *rand.Rand, weights [numE2EKinds]float64) int {
	var total float64
	for _, w := range weights {
		total += w
	}
	x := rng.Float64() * total
	last := e2ePing
	for k, w := range weights {
		if w == 0 {
			continue
		}
		if x < w {
			return k
		}
		x -= w
		last = k
	}
	return last // rounding at the top end
}

// do sends one request and returns its latency, the body read to the end.
func (g *e2eGen) do(site, kind int, u *e2eUser) (time.Duration, bool) {
	body := e2eBody(kind, u.cursor[site])
	req, err := http.NewRequest(http.MethodPost, g.base[site]+apiPresencePath, strings.NewReader(body))
	if err != nil {
		return 0, false
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", u.auth)
	start := time.Now()
	resp, err := g.client.Do(req)
	if err != nil {
		return time.Since(start), false
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	d := time.Since(start)
	if err != nil || resp.StatusCode != http.StatusOK {
		return d, false
	}
	if kind == e2eModern {
		if id, ok := lastUpdateID(b); ok {
			u.cursor[site] = id
		}
	}
	return d, true
}

// e2eBody is the request each kind sends, as the real clients do.
func e2eBody(kind int, cursor int64) string {
	switch kind {
	case e2eSlim:
		return "new_user_input=false&ping_only=false&slim_presence=true&status=active"
	case e2eModern:
		return "last_update_id=" + strconv.FormatInt(cursor, 10) + "&new_user_input=false&ping_only=false&status=active"
	}
	return "new_user_input=false&ping_only=true&status=active"
}

// summarize turns samples into percentiles and closed-loop throughput.
func summarize(samples []e2eSample, workers int) [numE2EKinds][numSites]E2EStats {
	var ds [numE2EKinds][numSites][]time.Duration
	var out [numE2EKinds][numSites]E2EStats
	for _, s := range samples {
		if !s.ok {
			out[s.kind][s.site].Errors++
			continue
		}
		ds[s.kind][s.site] = append(ds[s.kind][s.site], s.d)
	}
	for k := range numE2EKinds {
		for s := range numSites {
			out[k][s] = stats(ds[k][s], out[k][s].Errors, workers)
		}
	}
	return out
}

func stats(ds []time.Duration, errors, workers int) E2EStats {
	st := E2EStats{N: len(ds), Errors: errors}
	if len(ds) == 0 {
		return st
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	st.P50, st.P99 = percentile(ds, 0.50), percentile(ds, 0.99)
	st.Mean = sum / time.Duration(len(ds))
	st.Throughput = float64(workers) / st.Mean.Seconds()
	return st
}

// percentile reads the q-th quantile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}
