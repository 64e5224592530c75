package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// frontCaddyfile is Caddyfile.example with its two sites side by side: the
// module site and the same site without the module. The access log is
// discarded rather than written, and servers close idle connections soon,
// so that goroutines of finished connections are gone when counted. That
// includes connections that never carried a request (Go's transport dials
// ahead, and a dial a request did not wait for stays unused), which Go's
// server times out by read_header, not idle.
const frontCaddyfile = `{
	admin localhost:{ADMIN}
	servers {
		timeouts {
			read_header {IDLE}
			idle        {IDLE}
		}
	}
}

# The module site, as in Caddyfile.example.
:{MODULE} {
	encode zstd gzip
	zulip_presence {
		mode            {MODE}
		coalesce_window 55s
		resync_interval 10m
		users_refresh   10m
		max_body        64KiB
		cache_name      default
		cache_size      {CACHE}
	}
	reverse_proxy localhost:{SIM}
	log {
		output discard
	}
}

# The same site without the module, for comparison.
:{PLAIN} {
	encode zstd gzip
	reverse_proxy localhost:{SIM}
	log {
		output discard
	}
}

# A site for a probe session only, with a store of its own that no flood
# fills: its ping answered locally right after a reload shows that the
# state survived the reload, and not merely that it was not evicted.
:{PROBE} {
	zulip_presence {
		mode       {MODE}
		cache_name probe
		cache_size 16MiB
	}
	reverse_proxy localhost:{SIM}
}
`

// simCaddyfile serves the simulated Zulip from a Caddy of its own, so that
// reloading the front Caddy keeps the realm (its keys, sessions and rows)
// and the front's heap holds no simulator.
const simCaddyfile = `{
	admin off
	servers {
		timeouts {
			read_header {IDLE}
			idle        {IDLE}
		}
	}
}

:{SIM} {
	zulip_sim {
		users  {USERS}
		online {ONLINE}
		seed   1
	}
}
`

// fill replaces {NAME} placeholders.
func fill(tmpl string, vars map[string]string) string {
	for k, v := range vars {
		tmpl = strings.ReplaceAll(tmpl, "{"+k+"}", v)
	}
	return tmpl
}

// freePort asks the kernel for an unused loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// proc is one running Caddy.
type proc struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
}

// startCaddy runs `caddy run` on a Caddyfile written to dir, with Caddy's
// config and data directories inside dir, its output in dir/name.log, and
// env added to this process's environment.
func startCaddy(bin, dir, name, caddyfile string, env ...string) (*proc, error) {
	conf := filepath.Join(dir, name+".caddyfile")
	if err := os.WriteFile(conf, []byte(caddyfile), 0o644); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--config", conf, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"), "XDG_DATA_HOME="+filepath.Join(dir, "data"))
	cmd.Env = append(cmd.Env, env...)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, log: logf, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks Caddy to quit and kills it if it has not within 10 s.
func (p *proc) stop() {
	if !p.exited() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	}
	p.log.Close()
}

// waitUp polls url until it answers, the process exits, or 30 s pass.
func waitUp(p *proc, url string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("caddy exited; see %s", p.log.Name())
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer within 30s; see %s", url, p.log.Name())
}

// ctlClient talks to the admin endpoint and the simulator's control API,
// on connections of its own.
var ctlClient = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// call sends a request with an optional JSON body and decodes a JSON answer
// into out (unless out is nil). host, if set, replaces the Host header.
func call(method, url, host string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return err
	}
	if host != "" {
		req.Host = host
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := ctlClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, bytes.TrimSpace(b))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// sim is the simulated Zulip's control API. Each realm answers for a Host;
// any other Host is the seeded demo realm.
type sim struct{ base string }

type simUser struct {
	UserID int64  `json:"user_id"`
	Email  string `json:"email"`
	APIKey string `json:"api_key"`
}

type simStats struct {
	Requests      map[string]int64 `json:"requests"`
	ResponseBytes int64            `json:"response_bytes"`
}

// total is the number of API requests the realm answered.
func (st simStats) total() int64 {
	var n int64
	for k, v := range st.Requests {
		if k != "presence_error" { // a subset of "presence"
			n += v
		}
	}
	return n
}

func (s sim) users(host string) ([]simUser, error) {
	var out struct{ Users []simUser }
	err := call("GET", s.base+"/_sim/users", host, nil, &out)
	return out.Users, err
}

func (s sim) stats(host string) (simStats, error) {
	var st simStats
	err := call("GET", s.base+"/_sim/stats", host, nil, &st)
	return st, err
}

func (s sim) resetStats(host string) error {
	return call("POST", s.base+"/_sim/stats/reset", host, nil, nil)
}

// rowAge is how old a user's presence row is, by the realm's clock: the
// older of its two times (a missing row or time counts as very old).
func (s sim) rowAge(host string, userID int64) (time.Duration, error) {
	var row struct {
		LastConnected *float64 `json:"last_connected"`
		LastActive    *float64 `json:"last_active"`
	}
	var clock struct{ Now float64 }
	if err := call("GET", s.base+"/_sim/users/"+strconv.FormatInt(userID, 10)+"/presence_row", host, nil, &row); err != nil {
		return 0, err
	}
	if err := call("GET", s.base+"/_sim/clock", host, nil, &clock); err != nil {
		return 0, err
	}
	if row.LastConnected == nil || row.LastActive == nil {
		return 24 * time.Hour, nil
	}
	oldest := min(*row.LastConnected, *row.LastActive)
	return time.Duration((clock.Now - oldest) * float64(time.Second)), nil
}

// newSession logs a user in and returns the session and CSRF cookies.
func (s sim) newSession(host string, userID int64) (sessionID, csrf string, err error) {
	var out struct{ Sessionid, Csrftoken string }
	err = call("POST", s.base+"/_sim/sessions", host, map[string]int64{"user_id": userID}, &out)
	return out.Sessionid, out.Csrftoken, err
}

// addRealm makes a quiet realm for host with n users, each with a presence
// row written in the last minutes, and returns the users.
func (s sim) addRealm(host string, n int) ([]simUser, error) {
	if err := call("POST", s.base+"/_sim/realms", "", map[string]string{"host": host}, nil); err != nil {
		return nil, err
	}
	now := float64(time.Now().Unix())
	users := make([]simUser, n)
	for i := range users {
		in := map[string]string{"email": fmt.Sprintf("user%d@%s", i+1, host), "full_name": fmt.Sprintf("User %d", i+1)}
		if err := call("POST", s.base+"/_sim/users", host, in, &users[i]); err != nil {
			return nil, err
		}
		ago := float64(120 + 60*i)
		row := map[string]float64{"last_connected": now - ago, "last_active": now - ago - 30}
		if err := call("POST", s.base+"/_sim/users/"+strconv.FormatInt(users[i].UserID, 10)+"/presence_row", host, row, nil); err != nil {
			return nil, err
		}
	}
	return users, nil
}

// admin reads the front Caddy: its admin endpoint and its /proc entry.
type admin struct {
	base string
	pid  int
}

// mem is a memory reading of the front Caddy.
type mem struct {
	HeapAlloc, HeapInuse int64 // after a forced GC
	RSS, RSSPeak         int64 // VmRSS, VmHWM (since the last resetPeak)
}

// mem forces a GC (the heap profile's gc=1) and then reads the runtime's
// memstats through expvar, and the process's RSS.
func (a admin) mem() (mem, error) {
	var m mem
	if err := call("GET", a.base+"/debug/pprof/heap?gc=1", "", nil, nil); err != nil {
		return m, err
	}
	var vars struct {
		Memstats struct{ HeapAlloc, HeapInuse int64 }
	}
	if err := call("GET", a.base+"/debug/vars", "", nil, &vars); err != nil {
		return m, err
	}
	m.HeapAlloc, m.HeapInuse = vars.Memstats.HeapAlloc, vars.Memstats.HeapInuse
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", a.pid))
	if err != nil {
		return m, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, val, _ := strings.Cut(sc.Text(), ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		switch name {
		case "VmRSS":
			m.RSS = kb << 10
		case "VmHWM":
			m.RSSPeak = kb << 10
		}
	}
	return m, sc.Err()
}

// resetPeak resets the process's VmHWM to its current RSS, so that each
// phase reports its own peak. Kernels that do not allow it leave the peak
// since start.
func (a admin) resetPeak() {
	os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", a.pid), []byte("5"), 0)
}

// goroutines reads the goroutine count from the goroutine profile.
func (a admin) goroutines() (int, error) {
	resp, err := ctlClient.Get(a.base + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		return 0, err
	}
	var n int
	if _, err := fmt.Sscanf(line, "goroutine profile: total %d", &n); err != nil {
		return 0, fmt.Errorf("goroutine profile: %q: %v", line, err)
	}
	return n, nil
}

// dumpGoroutines writes the goroutine profile, headed by phase, to file.
func (a admin) dumpGoroutines(file, phase string) error {
	resp, err := ctlClient.Get(a.base + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "# %s\n", phase)
	_, err = io.Copy(f, resp.Body)
	return err
}

// metric returns the value of one sample of the admin /metrics, by its
// full name with labels as Prometheus prints them; 0 when absent.
func (a admin) metric(sample string) (float64, error) {
	resp, err := ctlClient.Get(a.base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, sc.Err()
}

// storeBytes is the module's own figure: caddy_zulip_presence_store_bytes.
func (a admin) storeBytes() (int64, error) {
	v, err := a.metric("caddy_zulip_presence_store_bytes")
	return int64(v), err
}

type storeInfo struct {
	CacheName  string `json:"cache_name"`
	UsedBytes  int64  `json:"used_bytes"`
	MaxBytes   int64  `json:"max_bytes"`
	References int    `json:"references"`
}

func (a admin) stores() ([]storeInfo, error) {
	var out []storeInfo
	err := call("GET", a.base+"/zulip_presence/stores", "", nil, &out)
	return out, err
}

// reload loads caddyfile again through POST /load. Caddy skips a load of
// the config it runs unless told to revalidate, as `caddy reload --force`
// does.
func (a admin) reload(ctx context.Context, caddyfile string) error {
	req, err := http.NewRequestWithContext(ctx, "POST", a.base+"/load", strings.NewReader(caddyfile))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/caddyfile")
	req.Header.Set("Cache-Control", "must-revalidate")
	resp, err := ctlClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("reload: %s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return nil
}
