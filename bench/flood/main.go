// Command flood measures, on a real Caddy, that zulip_presence bounds its
// memory under floods of credentials and keeps its state, its error count
// and its goroutines through reloads under load. It is run by hand, not by
// go test:
//
//	go build -o /tmp/caddy-h4 ./xcaddy
//	go run ./bench/flood -caddy /tmp/caddy-h4
//
// It starts two Caddy processes: a simulated Zulip (zulip_sim, a demo realm
// of -users users, plus two small realms it makes over the /_sim/ control
// API) and, in front of it, Caddyfile.example's site with zulip_presence
// beside the same site with only reverse_proxy. The simulator runs apart so
// that reloads of the front Caddy keep the realm, and the front's heap is
// the module's. Floods a to c use a small realm (-small-users), so that a
// quarter of a million full answers take minutes, not hours; the demo realm
// sizes the snapshots of flood d and of the load run. Then:
//
//	a. slim polls with case variants of one valid key's email and of the
//	   Basic scheme, and extra spaces, which Zulip all accepts;
//	b. pings with made-up emails and wrong keys;
//	c. /json pings with made-up session cookies;
//	d. slim polls from -users distinct API keys of the demo realm, in
//	   rounds, so that the store fills up and evicts;
//
// a to c go to the module site and then to the plain site, to compare the
// requests that reach the simulated Zulip. After each, it forces a GC in
// the front Caddy and reads its heap (admin /debug/vars), its RSS (/proc)
// and the module's store (admin /metrics and /zulip_presence/stores).
// Last, a mixed load from many valid clients, and some invalid ones, goes
// to both sites for -load while the front Caddy reloads its config -reloads
// times; after each reload a probe session's ping must still be answered
// locally. That probe goes through a third site whose store nothing else
// fills; a second probe, through the module site, shows what eviction from
// the full store costs.
//
// It prints markdown tables and exits with status 1 when a bound is broken.
// -scale 0.1 is a quick run.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

type config struct {
	caddy                  string
	mode                   string
	users, online          int
	smallUsers             int
	workers, loadWorkers   int
	scale                  float64
	rounds                 int
	loadFor                time.Duration
	reloads                int
	idle                   time.Duration
	cacheSize              int64
	maxRSS                 int64
	goroutineSlack         int
	apiClients, webClients int
	keep                   bool
	frontMemLimit          string
}

func main() {
	var cfg config
	cacheSize := flag.String("cache-size", "256MiB", "the module's cache_size")
	maxRSS := flag.String("max-rss", "", "largest acceptable peak RSS of the front Caddy (default: twice the heap bound, 1.5 × cache-size + 64MiB, plus 128MiB)")
	flag.StringVar(&cfg.caddy, "caddy", "", "Caddy binary with zulip_presence and zulip_sim (default: go build ./xcaddy into a temporary directory)")
	flag.StringVar(&cfg.mode, "mode", "session", "the module's mode: session or shared")
	flag.IntVar(&cfg.users, "users", 5000, "users of the demo realm (flood d and the load run)")
	flag.IntVar(&cfg.online, "online", 200, "users of the demo realm whose simulated clients keep pinging")
	flag.IntVar(&cfg.smallUsers, "small-users", 100, "users of the realm of floods a to c")
	flag.IntVar(&cfg.workers, "workers", 50, "concurrent requests of the floods")
	flag.Float64Var(&cfg.scale, "scale", 1, "multiplies the number of requests of floods a to c")
	flag.IntVar(&cfg.rounds, "rounds", 3, "slim polls per distinct session in flood d")
	flag.DurationVar(&cfg.loadFor, "load", 2*time.Minute, "duration of the load run")
	flag.IntVar(&cfg.loadWorkers, "load-workers", 40, "concurrent clients of the load run, each sending to both sites")
	flag.IntVar(&cfg.reloads, "reloads", 20, "config reloads during the load run")
	flag.IntVar(&cfg.apiClients, "api-clients", 1000, "API clients (Basic credentials) of the load run")
	flag.IntVar(&cfg.webClients, "web-clients", 300, "browser sessions of the load run")
	flag.DurationVar(&cfg.idle, "idle", 5*time.Second, "servers' idle timeout")
	flag.IntVar(&cfg.goroutineSlack, "goroutine-slack", 5, "goroutines the front Caddy may have gained after the load run and the idle timeout")
	flag.StringVar(&cfg.frontMemLimit, "front-gomemlimit", "", "GOMEMLIMIT of the front Caddy alone (Go's syntax: 600MiB); empty: none")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary directory (Caddyfiles and Caddy logs)")
	flag.Parse()
	for _, s := range []struct {
		flag string
		dst  *int64
	}{{*cacheSize, &cfg.cacheSize}, {*maxRSS, &cfg.maxRSS}} {
		if s.flag == "" {
			continue
		}
		n, err := humanize.ParseBytes(s.flag)
		if err != nil {
			fmt.Fprintln(os.Stderr, "flood:", err)
			os.Exit(2)
		}
		*s.dst = int64(n)
	}
	if cfg.maxRSS == 0 {
		// A Go heap may grow to twice what is live before it collects.
		cfg.maxRSS = 2*heapLimit(cfg.cacheSize) + 128<<20
	}
	ok, err := run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "flood:", err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

// Hosts of the small realms, so that their traffic is counted apart from
// the demo realm's, which answers every other Host.
const (
	smallHost     = "small.example"
	probeHost     = "probe.example"
	mainProbeHost = "probe-main.example"
)

// rig is the running setup.
type rig struct {
	cfg       config
	dir       string
	front     string // the front Caddyfile, sent again on every reload
	sim       sim
	admin     admin
	base      [numSites]string
	probePort int
	client    *http.Client
	small     []simUser
	demo      []simUser
	probes    [2]*probe // through the probe site, and through the module site
	checks    []check
	dumps     int // goroutine profiles written
}

type check struct {
	ok   bool
	what string
}

func (r *rig) check(ok bool, format string, args ...any) {
	r.checks = append(r.checks, check{ok, fmt.Sprintf(format, args...)})
}

func run(cfg config) (bool, error) {
	dir, err := os.MkdirTemp("", "flood-")
	if err != nil {
		return false, err
	}
	if cfg.keep {
		fmt.Fprintln(os.Stderr, "flood: files in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	if cfg.caddy == "" {
		cfg.caddy = filepath.Join(dir, "caddy")
		fmt.Fprintln(os.Stderr, "flood: go build -o", cfg.caddy, "./xcaddy")
		build := exec.Command("go", "build", "-o", cfg.caddy, "./xcaddy")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return false, fmt.Errorf("building Caddy (run from the repository root): %v", err)
		}
	}

	var ports [5]int // admin, module, plain, sim, probe
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return false, err
		}
	}
	vars := map[string]string{
		"ADMIN": strconv.Itoa(ports[0]), "MODULE": strconv.Itoa(ports[1]), "PLAIN": strconv.Itoa(ports[2]), "SIM": strconv.Itoa(ports[3]), "PROBE": strconv.Itoa(ports[4]),
		"IDLE": cfg.idle.String(), "MODE": cfg.mode, "CACHE": strconv.FormatInt(cfg.cacheSize, 10),
		"USERS": strconv.Itoa(cfg.users), "ONLINE": strconv.Itoa(cfg.online),
	}
	r := &rig{
		cfg:       cfg,
		dir:       dir,
		front:     fill(frontCaddyfile, vars),
		sim:       sim{base: "http://127.0.0.1:" + vars["SIM"]},
		base:      [numSites]string{"http://127.0.0.1:" + vars["MODULE"], "http://127.0.0.1:" + vars["PLAIN"]},
		client:    newClient(max(cfg.workers, 2*cfg.loadWorkers)),
		probePort: ports[4],
	}
	simProc, err := startCaddy(cfg.caddy, dir, "sim", fill(simCaddyfile, vars))
	if err != nil {
		return false, err
	}
	defer simProc.stop()
	if err := waitUp(simProc, r.sim.base+"/_sim/stats"); err != nil {
		return false, err
	}
	var frontEnv []string
	if cfg.frontMemLimit != "" {
		frontEnv = append(frontEnv, "GOMEMLIMIT="+cfg.frontMemLimit)
	}
	frontProc, err := startCaddy(cfg.caddy, dir, "front", r.front, frontEnv...)
	if err != nil {
		return false, err
	}
	defer frontProc.stop()
	r.admin = admin{base: "http://localhost:" + vars["ADMIN"], pid: frontProc.pid()}
	if err := waitUp(frontProc, r.admin.base+"/config/"); err != nil {
		return false, err
	}
	if err := r.setup(); err != nil {
		return false, err
	}
	if err := r.floods(); err != nil {
		return false, err
	}
	if err := r.loadRun(); err != nil {
		return false, err
	}
	fmt.Println("### Checks")
	fmt.Println()
	allOK := true
	for _, c := range r.checks {
		mark := "PASS"
		if !c.ok {
			mark, allOK = "FAIL", false
		}
		fmt.Printf("- %s: %s\n", mark, c.what)
	}
	if frontProc.exited() {
		return false, fmt.Errorf("the front Caddy exited; see %s", frontProc.log.Name())
	}
	return allOK, nil
}

// setup makes the small realms and reads the demo realm's users.
func (r *rig) setup() error {
	var err error
	if r.small, err = r.sim.addRealm(smallHost, r.cfg.smallUsers); err != nil {
		return err
	}
	r.probes[0] = &probe{name: "through the probe site (a store of its own)", host: probeHost, base: "http://127.0.0.1:" + strconv.Itoa(r.probePort)}
	r.probes[1] = &probe{name: "through the module site (the flooded store)", host: mainProbeHost, base: r.base[module]}
	for _, p := range r.probes {
		users, err := r.sim.addRealm(p.host, 1)
		if err != nil {
			return err
		}
		p.user = users[0]
	}
	if r.demo, err = r.sim.users(""); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "flood: realms ready: demo %d users, %s %d, %s and %s 1\n", len(r.demo), smallHost, len(r.small), probeHost, mainProbeHost)
	return nil
}

// reading is what the report shows after a phase.
type reading struct {
	phase      string
	t          tally
	upstream   [numSites]simStats // requests the simulated Zulip answered, per site
	compared   bool               // the flood also went to the plain site
	plainRate  float64            // its requests per second there
	store      int64
	mem        mem
	goroutines int
}

func (r *rig) read(phase string, t tally) (reading, error) {
	rd := reading{phase: phase, t: t}
	var err error
	if rd.mem, err = r.admin.mem(); err != nil {
		return rd, err
	}
	if rd.store, err = r.admin.storeBytes(); err != nil {
		return rd, err
	}
	rd.goroutines, err = r.admin.goroutines()
	if err == nil && r.cfg.keep {
		r.dumps++
		err = r.admin.dumpGoroutines(filepath.Join(r.dir, fmt.Sprintf("goroutines-%02d.txt", r.dumps)), phase)
	}
	return rd, err
}

// floods runs floods a to d and prints their table.
func (r *rig) floods() error {
	scaled := func(n int) int { return max(1, int(float64(n)*r.cfg.scale)) }
	victim := r.small[0]
	schemes := []string{"Basic", "basic", "BASIC", "bAsIc"}
	seps := []string{" ", "  ", "\t", " \t "}
	cookieNames := []string{"sessionid", "__Host-sessionid"}
	type floodSpec struct {
		name string
		n    int
		want expectation
		mk   func(base string) func(rng *rand.Rand, i int) *http.Request
	}
	specs := []floodSpec{
		{"a. slim polls, one key, email and scheme case variants", scaled(250_000), wantOK, func(base string) func(*rand.Rand, int) *http.Request {
			return func(rng *rand.Rand, i int) *http.Request {
				req := presenceRequest(base, smallHost, apiPath, slimBody)
				req.Header.Set("Authorization", basic(schemes[rng.IntN(4)], seps[rng.IntN(4)], randomCase(rng, victim.Email), victim.APIKey))
				return req
			}
		}},
		{"b. pings, made-up emails and wrong keys", scaled(100_000), wantRefused, func(base string) func(*rand.Rand, int) *http.Request {
			return func(rng *rand.Rand, i int) *http.Request {
				email, key := "nobody"+randomString(rng, 10, alnum[:36])+"@"+smallHost, randomString(rng, 32, alnum)
				switch i % 3 {
				case 1: // a real email, a wrong key
					email = r.small[rng.IntN(len(r.small))].Email
				case 2: // a real key, another email
					key = r.small[rng.IntN(len(r.small))].APIKey
				}
				req := presenceRequest(base, smallHost, apiPath, pingBody)
				req.Header.Set("Authorization", basic("Basic", " ", email, key))
				return req
			}
		}},
		{"c. /json pings, made-up session cookies", scaled(200_000), wantRefused, func(base string) func(*rand.Rand, int) *http.Request {
			return func(rng *rand.Rand, i int) *http.Request {
				req := presenceRequest(base, smallHost, jsonPath, pingBody)
				setBrowser(req, cookieNames[rng.IntN(2)], randomString(rng, 32, alnum[:36]), randomString(rng, 32, alnum))
				return req
			}
		}},
	}

	start, err := r.read("start (idle)", tally{})
	if err != nil {
		return err
	}
	rows := []reading{start}
	for _, fs := range specs {
		var rd reading
		for site := range numSites {
			if err := r.sim.resetStats(smallHost); err != nil {
				return err
			}
			if site == module {
				r.admin.resetPeak()
			}
			fmt.Fprintf(os.Stderr, "flood: %s: %d requests to the %s site\n", fs.name, fs.n, siteName(site))
			t := flood(r.client, fs.n, r.cfg.workers, fs.want, fs.mk(r.base[site]))
			st, err := r.sim.stats(smallHost)
			if err != nil {
				return err
			}
			if site == module {
				if rd, err = r.read(fs.name, t); err != nil {
					return err
				}
			} else {
				rd.compared = true
				rd.plainRate = float64(t.Requests) / t.Elapsed.Seconds()
				if t.Errors() != 0 {
					fmt.Fprintf(os.Stderr, "flood: the plain site answered %s: %s\n", fs.name, t.describe())
				}
			}
			rd.upstream[site] = st
		}
		rows = append(rows, rd)
		r.checkMemory(rd)
		r.check(rd.t.Errors() == 0, "%s: all %d answers as Zulip gives them (%s unexpected)", fs.name, rd.t.Requests, rd.t.describe())
		grown := rd.store - rows[len(rows)-2].store
		switch fs.name[0] {
		case 'a':
			r.check(grown < 1<<20, "a: the case variants made one session: the store grew by %s (< 1 MiB)", ibytes(grown))
		case 'b', 'c':
			r.check(grown < 64<<10, "%c: refused credentials left nothing in the store: it grew by %s (< 64 KiB)", fs.name[0], ibytes(grown))
			mod, pl := rd.upstream[module].total(), rd.upstream[plain].total()
			r.check(mod <= pl, "%c: upstream requests, module %d ≤ plain %d", fs.name[0], mod, pl)
		}
	}

	// d: distinct sessions, in rounds over all users.
	if err := r.sim.resetStats(""); err != nil {
		return err
	}
	for round := 1; round <= r.cfg.rounds; round++ {
		name := fmt.Sprintf("d. %d distinct sessions, slim poll round %d", len(r.demo), round)
		fmt.Fprintf(os.Stderr, "flood: %s\n", name)
		r.admin.resetPeak()
		t := flood(r.client, len(r.demo), r.cfg.workers, wantOK, func(rng *rand.Rand, i int) *http.Request {
			u := r.demo[i]
			req := presenceRequest(r.base[module], "", apiPath, slimBody)
			req.Header.Set("Authorization", basic("Basic", " ", u.Email, u.APIKey))
			return req
		})
		rd, err := r.read(name, t)
		if err != nil {
			return err
		}
		if rd.upstream[module], err = r.sim.stats(""); err != nil {
			return err
		}
		if err := r.sim.resetStats(""); err != nil {
			return err
		}
		rows = append(rows, rd)
		r.checkMemory(rd)
		r.check(rd.t.Errors() == 0, "%s: all %d answers 2xx (%s unexpected)", name, rd.t.Requests, rd.t.describe())
	}
	stores, err := r.admin.stores()
	if err != nil {
		return err
	}
	var storeLines []string
	for _, s := range stores {
		r.check(s.UsedBytes <= s.MaxBytes, "d: store %q holds %s of its %s budget", s.CacheName, ibytes(s.UsedBytes), ibytes(s.MaxBytes))
		storeLines = append(storeLines, fmt.Sprintf("%q %s of %s, %d reference(s)", s.CacheName, ibytes(s.UsedBytes), ibytes(s.MaxBytes), s.References))
	}

	fmt.Printf("### Floods (mode %s, cache_size %s, front GOMEMLIMIT %q; front Caddy after each, heap after a forced GC)\n\n", r.cfg.mode, ibytes(r.cfg.cacheSize), r.cfg.frontMemLimit)
	fmt.Println("| phase | requests | req/s module / plain | unexpected | upstream requests module / plain | upstream bytes module / plain | store bytes | heap after GC | heap in use | RSS | RSS peak | goroutines |")
	fmt.Println("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, rd := range rows {
		up, upBytes := "—", "—"
		if rd.upstream[module].Requests != nil {
			up = strconv.FormatInt(rd.upstream[module].total(), 10)
			upBytes = ibytes(rd.upstream[module].ResponseBytes)
			if rd.compared {
				up += " / " + strconv.FormatInt(rd.upstream[plain].total(), 10)
				upBytes += " / " + ibytes(rd.upstream[plain].ResponseBytes)
			}
		}
		rate := "—"
		if rd.t.Elapsed > 0 {
			rate = fmt.Sprintf("%.0f", float64(rd.t.Requests)/rd.t.Elapsed.Seconds())
		}
		if rd.compared {
			rate += fmt.Sprintf(" / %.0f", rd.plainRate)
		}
		unexpected := "—"
		if rd.t.Requests > 0 {
			unexpected = rd.t.describe()
		}
		fmt.Printf("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |\n",
			rd.phase, rd.t.Requests, rate, unexpected, up, upBytes, ibytes(rd.store),
			ibytes(rd.mem.HeapAlloc), ibytes(rd.mem.HeapInuse), ibytes(rd.mem.RSS), ibytes(rd.mem.RSSPeak), rd.goroutines)
	}
	fmt.Printf("\nGET /zulip_presence/stores after d: %s. Heap bound %s, RSS bound %s; RSS peak is per phase.\n\n",
		strings.Join(storeLines, "; "), ibytes(heapLimit(r.cfg.cacheSize)), ibytes(r.cfg.maxRSS))
	return nil
}

// heapLimit is the bound on the heap after a GC: the store's budget with
// half again for what its cost accounting may miss, and a constant for
// Caddy itself.
func heapLimit(cacheSize int64) int64 { return cacheSize*3/2 + 64<<20 }

func (r *rig) checkMemory(rd reading) {
	limit := heapLimit(r.cfg.cacheSize)
	r.check(rd.mem.HeapAlloc <= limit, "%s: heap after GC %s ≤ %s", rd.phase, ibytes(rd.mem.HeapAlloc), ibytes(limit))
	r.check(rd.mem.RSSPeak <= r.cfg.maxRSS, "%s: peak RSS %s ≤ %s", rd.phase, ibytes(rd.mem.RSSPeak), ibytes(r.cfg.maxRSS))
}

func siteName(site int) string {
	if site == module {
		return "module"
	}
	return "plain"
}

func ibytes(n int64) string {
	if n < 0 {
		return "-" + humanize.IBytes(uint64(-n))
	}
	return humanize.IBytes(uint64(n))
}

// idle lets every connection go idle and waits past the idle timeout, so
// that the servers close them.
func (r *rig) idle() {
	r.client.CloseIdleConnections()
	time.Sleep(r.cfg.idle + 3*time.Second)
}

// probe is a session alone in its realm, so that the realm's count of
// presence requests tells whether its pings reached the server.
type probe struct {
	name string
	host string // its realm
	base string // the site it pings through
	user simUser

	local, lapsed, lost int // what its pings right after reloads showed
}

// ping sends the probe's ping and reports whether it reached the server,
// and how old the user's presence row was before it, in the server's
// clock.
func (r *rig) ping(p *probe) (forwarded bool, rowAge time.Duration, err error) {
	before, err := r.sim.stats(p.host)
	if err != nil {
		return false, 0, err
	}
	if rowAge, err = r.sim.rowAge(p.host, p.user.UserID); err != nil {
		return false, 0, err
	}
	req := presenceRequest(p.base, p.host, apiPath, pingBody)
	req.Header.Set("Authorization", basic("Basic", " ", p.user.Email, p.user.APIKey))
	var t tally
	do(ctlClient, req, wantOK, false, &t)
	if t.OK != 1 {
		return false, 0, fmt.Errorf("probe ping: %s", t.describe())
	}
	after, err := r.sim.stats(p.host)
	if err != nil {
		return false, 0, err
	}
	return after.Requests["presence"] > before.Requests["presence"], rowAge, nil
}

// warm pings until the module answers the probe locally.
func (r *rig) warm(p *probe) (bool, error) {
	for range 10 {
		fwd, _, err := r.ping(p)
		if err != nil || !fwd {
			return !fwd, err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return false, nil
}

// afterReload pings right after a reload. A ping that reached the server
// is right when the user's row was about 55 s old: Zulip writes it only
// when it is older than that, and the module, which cannot read the
// server's clock to the millisecond, forwards from a little before until
// the server wrote. Otherwise it means the session's state was lost.
func (r *rig) afterReload(p *probe) error {
	fwd, rowAge, err := r.ping(p)
	switch {
	case err != nil:
		return err
	case !fwd:
		p.local++
	case rowAge >= 50*time.Second:
		p.lapsed++
	default:
		p.lost++
		fmt.Fprintf(os.Stderr, "flood: probe %s: ping after a reload forwarded; its row was %v old\n", p.name, rowAge.Round(time.Millisecond))
	}
	return nil
}

// reloadResult is what one reload in the middle of the load showed.
type reloadResult struct {
	err       error
	took      time.Duration
	pingLocal float64 // caddy_zulip_presence_requests_total{kind="ping",outcome="local"}
	stores    []storeInfo
}

// loadRun sends the mixed load to both sites while reloading the front
// Caddy, and prints its table.
func (r *rig) loadRun() error {
	var clients []*loadClient
	demo := r.demo[1:] // hamlet's key is the documented demo key; leave it be
	for i := 0; i < r.cfg.apiClients && i < len(demo); i++ {
		clients = append(clients, &loadClient{email: demo[i].Email, key: demo[i].APIKey, cursor: [numSites]int64{-1, -1}})
	}
	for i := 0; i < r.cfg.webClients && i < len(demo); i++ {
		u := demo[len(demo)-1-i]
		session, csrf, err := r.sim.newSession("", u.UserID)
		if err != nil {
			return err
		}
		clients = append(clients, &loadClient{browser: true, cookie: "sessionid", session: session, csrf: csrf, cursor: [numSites]int64{-1, -1}})
	}
	rand.Shuffle(len(clients), func(i, j int) { clients[i], clients[j] = clients[j], clients[i] })

	// The probes: sessions the module trusts, answered locally.
	for _, p := range r.probes {
		local, err := r.warm(p)
		if err != nil {
			return err
		}
		r.check(local, "probe %s: its ping is answered locally before the load", p.name)
	}

	r.idle()
	before, err := r.read("before load (idle)", tally{})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "flood: load run: %d clients, %d workers, both sites, %v, %d reloads\n", len(clients), r.cfg.loadWorkers, r.cfg.loadFor, r.cfg.reloads)
	r.admin.resetPeak()
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.loadFor)
	defer cancel()
	reloads := make(chan []reloadResult)
	go func() { reloads <- r.reloadDuring(ctx) }()
	tallies := load(ctx, r.client, r.base, clients, r.cfg.loadWorkers)
	results := <-reloads
	after, err := r.read("right after load", tally{})
	if err != nil {
		return err
	}
	r.idle()
	idle, err := r.read(fmt.Sprintf("after the %v idle timeout", r.cfg.idle), tally{})
	if err != nil {
		return err
	}

	fmt.Printf("### Load run (%v, %d clients, %d workers, each request to both sites, %d reloads)\n\n", r.cfg.loadFor, len(clients), r.cfg.loadWorkers, r.cfg.reloads)
	fmt.Println("| site | requests | req/s | as expected | errors | error detail | keep-alive races at reloads |")
	fmt.Println("|---|---:|---:|---:|---:|---|---:|")
	for site := range numSites {
		t := tallies[site]
		fmt.Printf("| %s | %d | %.0f | %d | %d | %s | %d |\n", siteName(site), t.Requests, float64(t.Requests)/t.Elapsed.Seconds(), t.OK, t.Errors(), t.describe(), t.Races)
	}
	fmt.Println()
	fmt.Println("| front Caddy | goroutines | heap after GC | heap in use | RSS | RSS peak | store bytes |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	for _, rd := range []reading{before, after, idle} {
		fmt.Printf("| %s | %d | %s | %s | %s | %s | %s |\n", rd.phase, rd.goroutines, ibytes(rd.mem.HeapAlloc), ibytes(rd.mem.HeapInuse), ibytes(rd.mem.RSS), ibytes(rd.mem.RSSPeak), ibytes(rd.store))
	}
	fmt.Println()

	ok := 0
	prevLocal := -1.0
	grows, storeOK := true, true
	var slowest time.Duration
	for _, res := range results {
		if res.err != nil {
			fmt.Fprintln(os.Stderr, "flood: reload:", res.err)
			continue
		}
		ok++
		slowest = max(slowest, res.took)
		if res.pingLocal <= prevLocal {
			grows = false
		}
		prevLocal = res.pingLocal
		if !storesOK(res.stores) {
			storeOK = false
			fmt.Fprintf(os.Stderr, "flood: stores after a reload: %+v\n", res.stores)
		}
	}
	fmt.Printf("Reloads: %d of %d succeeded (slowest %v). Local pings (metric) after each: %s.\n\n",
		ok, len(results), slowest.Round(time.Millisecond), pingLocalSeries(results))
	fmt.Println("| probe session, ping right after each reload | answered locally | forwarded, row ≥ 50 s old (Zulip's 55 s window) | forwarded otherwise: state lost |")
	fmt.Println("|---|---:|---:|---:|")
	for _, p := range r.probes {
		fmt.Printf("| %s | %d | %d | %d |\n", p.name, p.local, p.lapsed, p.lost)
	}
	fmt.Println()

	mod, pl := tallies[module], tallies[plain]
	r.check(ok == r.cfg.reloads, "load: %d of %d reloads succeeded", ok, r.cfg.reloads)
	r.check(mod.Errors() <= pl.Errors(), "load: module errors %d ≤ plain errors %d (of %d and %d requests)", mod.Errors(), pl.Errors(), mod.Requests, pl.Requests)
	p := r.probes[0]
	r.check(p.lost == 0 && p.local > 0, "load: the probe session's ping was answered locally right after %d reloads (%d forwarded as its row's window ran out, %d lost)", p.local, p.lapsed, p.lost)
	r.check(grows, "load: ping/local counter grew between every two reloads")
	r.check(storeOK, "load: /zulip_presence/stores showed both stores, in use, with 1 reference each, after every reload")
	r.check(idle.goroutines-before.goroutines <= r.cfg.goroutineSlack, "load: goroutines %d before, %d right after, %d after the idle timeout (growth ≤ %d)", before.goroutines, after.goroutines, idle.goroutines, r.cfg.goroutineSlack)
	r.checkMemory(after)
	return nil
}

// storesOK reports whether the admin listing shows the module site's store
// and the probe's, in use, each held by one handler: the configs that
// reloads replaced let go of them.
func storesOK(stores []storeInfo) bool {
	seen := map[string]bool{}
	for _, s := range stores {
		if s.UsedBytes <= 0 || s.References != 1 {
			return false
		}
		seen[s.CacheName] = true
	}
	return len(stores) == 2 && seen["default"] && seen["probe"]
}

func pingLocalSeries(results []reloadResult) string {
	var parts []string
	for _, res := range results {
		if res.err == nil {
			parts = append(parts, strconv.FormatFloat(res.pingLocal, 'f', 0, 64))
		}
	}
	return strings.Join(parts, ", ")
}

// reloadDuring spreads the reloads over the middle half of the load run,
// and after each one pings with the probe session and reads the metrics and
// the stores.
func (r *rig) reloadDuring(ctx context.Context) []reloadResult {
	deadline, _ := ctx.Deadline()
	start := time.Now()
	span := deadline.Sub(start)
	var out []reloadResult
	for i := range r.cfg.reloads {
		at := start.Add(span / 4)
		if r.cfg.reloads > 1 {
			at = at.Add(span / 2 * time.Duration(i) / time.Duration(r.cfg.reloads-1))
		}
		select {
		case <-ctx.Done():
			return append(out, reloadResult{err: ctx.Err()})
		case <-time.After(time.Until(at)):
		}
		var res reloadResult
		t0 := time.Now()
		reloading.Store(true)
		res.err = r.admin.reload(context.Background(), r.front)
		reloads.add(t0, time.Now())
		reloading.Store(false)
		if res.err != nil {
			out = append(out, res)
			continue
		}
		res.took = time.Since(t0)
		var err error
		for _, p := range r.probes {
			if err == nil {
				err = r.afterReload(p)
			}
		}
		if err == nil {
			res.pingLocal, err = r.admin.metric(`caddy_zulip_presence_requests_total{kind="ping",outcome="local"}`)
		}
		if err == nil {
			res.stores, err = r.admin.stores()
		}
		res.err = err
		out = append(out, res)
	}
	return out
}
