package main

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/zulip-presence/caddy-zulip-presence/caddymodule"
	"github.com/zulip-presence/caddy-zulip-presence/internal/twinrig"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// side is one of the two servers of the twin.
type side int

const (
	sideDirect side = iota // clients talk to zuliptest straight
	sideModule             // clients talk through the zulip_presence handler
	numSides
)

// Totals are one side's upstream cost, as its zuliptest realm counted it.
type Totals struct {
	Requests    int64 // API requests the server answered
	Bytes       int64 // response body bytes, raw JSON
	Wire        int64 // response body bytes on the wire (gzip, level 1)
	RowsRead    int64 // presence entries in answers
	RowsWritten int64 // presence row inserts and changes
}

// Minute is one simulated minute of upstream traffic.
type Minute struct {
	Requests      [numSides]int64
	Bytes         [numSides]int64
	IdealRequests float64
	IdealBytes    int64
}

// KindTotals is the traffic of one client kind.
type KindTotals struct {
	Clients  int                     // clients started
	Requests int64                   // client requests (the same on both sides)
	Polls    int64                   // of them, requests for presence data
	Upstream [numSides]int64         // requests that reached the server
	Bytes    [numSides]int64         // upstream response bytes they caused, raw JSON
	Wire     [numSides]int64         // the same on the wire
	CPU      [numSides]time.Duration // server thread CPU they caused
}

// RealmResult is everything the report says about one realm.
type RealmResult struct {
	Spec           Spec
	Variant        Variant       // how the module side was configured
	Trust          time.Duration // its trust_window
	MaxStaleness   time.Duration // its max_staleness (shared mode)
	Staleness      Staleness     // shared mode: how old its answers stood
	Totals         [numSides]Totals
	Ideal          IdealTotals
	ClientRequests int64
	DirectErrors   int64 // non-2xx direct answers: the workload's own bugs
	ByKind         [numKinds]KindTotals
	Minutes        []Minute
	Violations     int
	Samples        []string       // the first few violations
	ViolationKinds map[string]int // shared mode: violations by client kind and request
	RowMismatches  int            // users whose rows differ at the end
	LostWrites     int            // times a sender's row started to differ
	Sessions       int            // credentials the module saw
	StoreAccounted float64        // the store's own cost accounting, bytes
	StoreHeap      int64          // heap freed when the store was dropped, bytes
	StoreFixed     int64          // heap of the empty store, bytes
	SnapshotRows   int64          // rows of the converted sessions' last answers
	ServerCPU      [numSides]time.Duration
	ProxyCPU       time.Duration
	Outcomes       map[string]float64 // "kind/outcome" → requests
	Wall           time.Duration
	SideBusy       [numSides]time.Duration
	CompareBusy    time.Duration
}

// worker runs one side's requests on a locked OS thread, so that the
// thread's CPU clock measures exactly that side's work.
type worker struct {
	s     side
	tw    *twin
	in    chan []*job
	done  chan struct{}
	cur   *job
	next  caddyhttp.Handler
	free  [][]byte
	seq   int64         // newest presence row update id on this side
	rows  int64         // the server's RowsReturned at the last look
	bytes [2]int64      // the server's ResponseBytes and WireBytes at the last look
	cpu   time.Duration // in the handler, upstream included (module side)
	upCPU time.Duration // in the server
	busy  time.Duration
}

func newWorker(tw *twin, s side) *worker {
	w := &worker{s: s, tw: tw, in: make(chan []*job), done: make(chan struct{})}
	w.next = twinrig.Next(http.HandlerFunc(w.upstream))
	return w
}

func (w *worker) loop() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for jobs := range w.in {
		start := time.Now()
		for _, j := range jobs {
			w.do(j)
		}
		w.busy += time.Since(start)
		w.done <- struct{}{}
	}
}

func (w *worker) buf() []byte {
	if n := len(w.free); n > 0 {
		b := w.free[n-1]
		w.free = w.free[:n-1]
		return b[:0]
	}
	return nil
}

// do sends one job to this side and records the answer.
func (w *worker) do(j *job) {
	req := j.request(w.s)
	rec := &recorder{header: http.Header{}, body: w.buf()}
	w.cur = j
	if w.s == sideDirect {
		w.serveDirect(j, rec, req)
	} else {
		w.serveModule(w.tw.hs[j.c.inst], rec, req)
	}
	raw, wire := w.bytesSent()
	j.upBytes[w.s], j.upWire[w.s] = raw, wire
	w.gunzip(rec)
	j.ans[w.s] = answer{status: rec.status, header: rec.header, body: rec.body}
	j.learn(w.s)
	j.row[w.s] = w.tw.realm(w.s).PresenceRow(j.c.user.id)
	w.seq = max(w.seq, j.row[w.s].LastUpdateID)
	if w.s == sideDirect {
		j.hi = w.tw.realm(sideDirect).LastUpdateID()
		w.tw.ideal.observe(j, w.tw.sec)
	}
}

// serveDirect has the direct server answer the client.
func (w *worker) serveDirect(j *job, rec *recorder, req *http.Request) {
	c0 := threadCPU()
	w.tw.Direct.ServeHTTP(rec, req)
	spent := threadCPU() - c0
	w.cpu += spent
	w.upCPU += spent
	j.cpu[sideDirect] = spent
	j.up[sideDirect] = 1
	j.rows = w.rowsReturned()
}

// serveModule has the handler answer the client, calling the proxied
// server through upstream; a handler error is what Caddy would turn into
// a 502.
func (w *worker) serveModule(h *caddymodule.Handler, rec *recorder, req *http.Request) {
	c0 := threadCPU()
	err := h.ServeHTTP(rec, req, w.next)
	h.WaitVerifications() // before the virtual clock moves on
	w.cpu += threadCPU() - c0
	if err != nil {
		rec.status, rec.body = http.StatusBadGateway, append(rec.body[:0], err.Error()...)
	}
}

// rowsReturned is how many presence entries the side's server returned
// since the last call: the entries of the answer just given.
func (w *worker) rowsReturned() int {
	n := w.tw.realm(w.s).Stats().RowsReturned
	d := n - w.rows
	w.rows = n
	return int(d)
}

// bytesSent is how many response body bytes, raw and on the wire, the
// side's server sent since the last call: those of the job just served.
func (w *worker) bytesSent() (raw, wire int) {
	st := w.tw.realm(w.s).Stats()
	raw, wire = int(st.ResponseBytes-w.bytes[0]), int(st.WireBytes-w.bytes[1])
	w.bytes = [2]int64{st.ResponseBytes, st.WireBytes}
	return raw, wire
}

// gunzip decodes an answer the client got compressed, as the client's
// HTTP library does, so that it is compared and read as JSON.
func (w *worker) gunzip(rec *recorder) {
	if rec.header.Get("Content-Encoding") != "gzip" {
		return
	}
	zr, err := gzip.NewReader(bytes.NewReader(rec.body))
	if err != nil {
		return // compared as it came: a violation
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		return
	}
	w.free = append(w.free, rec.body)
	rec.body = append(w.buf(), plain...)
	rec.header.Del("Content-Encoding")
}

// upstream is the module's next handler (twinrig.Next): the proxied
// zuliptest, with its cost counted.
func (w *worker) upstream(rw http.ResponseWriter, r *http.Request) {
	c0 := threadCPU()
	w.tw.Proxied.ServeHTTP(rw, r)
	spent := threadCPU() - c0
	w.upCPU += spent
	w.cur.cpu[sideModule] += spent
	w.cur.up[sideModule]++
}

// twin is the twin rig (internal/twinrig) run as a benchmark: every
// request goes to both servers in the same virtual second, each side on a
// worker of its own, and every pair of answers is compared (design §6).
type twin struct {
	*twinrig.Rig
	spec     Spec
	variant  Variant
	hs       []*caddymodule.Handler // one per instance
	releases []func() error         // one per handler
	metrics  prometheus.Gatherer    // the handlers' collectors are process-wide
	route    *rand.Rand             // assigns clients to instances
	checker  *sharedChecker         // shared mode
	stale    []float64              // shared mode: staleness of every poll answer
	viewAged []float64              // of those answered without upstream
	workers  [numSides]*worker
	queue    []*job
	ideal    *ideal
	cmp      *comparer
	res      *RealmResult
	sec      int
	ids      []int64 // every user, bots included
	creds    map[string]bool
	snapRows map[string]int     // credential → entries of its last converted answer
	diverged map[int64]bool     // users whose rows differ between the sides
	seen     map[string]bool    // violation messages already sampled
	before   map[string]float64 // module counters at the start
	online   []int64            // online user-seconds per minute
	last     [numSides]zuliptest.Stats
}

func newTwin(spec Spec) *twin {
	tw := &twin{Rig: twinrig.New(), spec: spec, res: &RealmResult{Spec: spec, Variant: sessionRun}, creds: map[string]bool{}, snapRows: map[string]int{}, diverged: map[int64]bool{}, seen: map[string]bool{}}
	tw.online = make([]int64, spec.Minutes)
	return tw
}

// realm is the default realm of side s's server.
func (tw *twin) realm(s side) *zuliptest.Realm {
	if s == sideModule {
		return tw.Proxied.DefaultRealm()
	}
	return tw.Direct.DefaultRealm()
}

// addUser creates a user alike on both sides and returns its id.
func (tw *twin) addUser(email string, role zuliptest.Role) int64 {
	d, _, err := tw.AddUser(email, email, role)
	if err != nil {
		panic(err)
	}
	tw.ids = append(tw.ids, d.ID)
	return d.ID
}

func (tw *twin) resetStats() {
	tw.Both(func(r *zuliptest.Realm) { r.ResetStats() })
}

func (tw *twin) enqueue(j *job) {
	j.sec = tw.sec
	tw.queue = append(tw.queue, j)
}

// setVariant configures the module side of the run; seed makes the
// assignment of clients to instances.
func (tw *twin) setVariant(v Variant, seed uint64) {
	tw.variant = v
	tw.res.Variant = v
	st := tw.Direct.ServerSettings()
	st.IDGapRate = v.GapRate
	if v.Main {
		st.FeatureLevel = zuliptest.FeatureLevelMain
	}
	tw.SetServerSettings(st)
	tw.route = rand.New(rand.NewPCG(seed, 0x2157a9ce))
}

// instance picks the handler a new client talks to: at random when there
// are several, from a generator of its own, so the workload stays the
// same in every variant.
func (tw *twin) instance() int {
	if n := tw.variant.instances(); n > 1 {
		return tw.route.IntN(n)
	}
	return 0
}

// provision attaches fresh zulip_presence handlers to the module side, one
// per instance, each with its own store, with the virtual clock injected.
func (tw *twin) provision() error {
	stamp := time.Now().UnixNano()
	for i := range tw.variant.instances() {
		rate := 0.0 // off but where the run measures it at its default
		h := &caddymodule.Handler{CacheName: fmt.Sprintf("bench-%s-%d-%d", tw.spec.Name, stamp, i), Shadow: tw.variant.Shadow, VerifyRate: &rate}
		if tw.variant.Verify {
			h.VerifyRate = nil
		}
		if tw.variant.shared() {
			h.Mode = "shared"
			h.TrustWindow = caddy.Duration(tw.variant.Trust)
		}
		var ctx caddy.Context
		var release func() error
		err := quietly(func() (err error) {
			ctx, release, err = tw.Provision(h)
			return err
		})
		if err != nil {
			return err
		}
		tw.hs, tw.releases = append(tw.hs, h), append(tw.releases, release)
		if i == 0 {
			tw.metrics = ctx.GetMetricsRegistry()
		}
	}
	h := tw.hs[0]
	tw.res.Trust, tw.res.MaxStaleness = time.Duration(h.TrustWindow), time.Duration(h.MaxStaleness)
	if tw.variant.shared() {
		emails := map[int64]string{}
		for _, u := range tw.realm(sideDirect).Users() {
			emails[u.ID] = u.Email
		}
		tw.checker = &sharedChecker{realm: tw.realm(sideDirect), staleness: tw.res.MaxStaleness, emails: emails}
	}
	return nil
}

// quietly runs f with os.Stderr pointing at /dev/null. Outside a running
// Caddy config, caddy.Context.Logger builds a zap development logger that
// writes debug lines to the os.Stderr of the moment; provisioning with
// stderr redirected binds that logger to /dev/null for good, without
// touching the handler.
func quietly(f func() error) error {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return f()
	}
	saved := os.Stderr
	os.Stderr = null
	defer func() { os.Stderr = saved }()
	return f()
}

// run drives the workload for its whole duration, one virtual second at a
// time, calling progress after every simulated minute.
func (tw *twin) run(wl *workload, progress func(minute int)) error {
	tw.ideal = newIdeal(tw.realm(sideDirect), tw.ids, tw.spec.Minutes)
	fixedBase := heapAlloc()
	if err := tw.provision(); err != nil {
		tw.release()
		return err
	}
	tw.res.StoreFixed = heapAlloc() - fixedBase
	tw.before = gatherCounters(tw.metrics)
	check := compareJob
	if tw.checker != nil {
		check = tw.checker.check
	}
	tw.cmp = newComparer(check)
	for s := range numSides {
		tw.workers[s] = newWorker(tw, side(s))
		tw.workers[s].seq = tw.maxUpdateID(side(s))
		go tw.workers[s].loop()
	}
	start := time.Now()
	for sec := range tw.spec.Minutes * 60 {
		tw.sec, wl.now = sec, sec
		wl.fire()
		tw.dispatch()
		tw.online[sec/60] += int64(wl.online)
		if (sec+1)%60 == 0 {
			tw.sampleMinute(sec / 60)
			progress(sec/60 + 1)
		}
		tw.Clock.Advance(time.Second)
	}
	tw.settle(tw.cmp.wait())
	tw.cmp.close()
	tw.res.Wall = time.Since(start)
	tw.finish()
	return nil
}

// dispatch sends the queued jobs to both sides at once and waits for
// both. Their answers are compared while the sides run the next second;
// the previous second's, compared by now, are added to the counters.
func (tw *twin) dispatch() {
	jobs := tw.queue
	if len(jobs) == 0 {
		return
	}
	tw.queue = nil
	for _, w := range tw.workers {
		w.in <- jobs
	}
	for _, w := range tw.workers {
		<-w.done
	}
	tw.settle(tw.cmp.wait())
	tw.cmp.start(jobs)
}

// settle counts compared jobs and gives their answer buffers back to the
// workers, which are idle whenever it runs.
func (tw *twin) settle(jobs []*job) {
	for _, j := range jobs {
		tw.account(j)
	}
	for s, w := range tw.workers {
		for _, j := range jobs {
			w.free = append(w.free, j.ans[s].body)
		}
	}
}

// comparer checks one second's answer pairs on two goroutines, half each,
// while the sides already run the next second.
type comparer struct {
	check   func(*job, *[]byte) error
	in      [2]chan []*job
	done    chan time.Duration
	scratch [2][]byte
	pending []*job
	busy    time.Duration
}

func newComparer(check func(*job, *[]byte) error) *comparer {
	c := &comparer{check: check, done: make(chan time.Duration, 2)}
	for i := range c.in {
		c.in[i] = make(chan []*job, 1)
		go c.loop(i)
	}
	return c
}

func (c *comparer) loop(i int) {
	for jobs := range c.in[i] {
		start := time.Now()
		for _, j := range jobs {
			j.err = c.check(j, &c.scratch[i])
		}
		c.done <- time.Since(start)
	}
}

// start compares jobs in the background.
func (c *comparer) start(jobs []*job) {
	half := len(jobs) / 2
	c.in[0] <- jobs[:half]
	c.in[1] <- jobs[half:]
	c.pending = jobs
}

// wait returns the jobs in flight, compared; nil if there are none.
func (c *comparer) wait() []*job {
	if c.pending == nil {
		return nil
	}
	c.busy += <-c.done
	c.busy += <-c.done
	jobs := c.pending
	c.pending = nil
	return jobs
}

func (c *comparer) close() {
	for _, in := range c.in {
		close(in)
	}
}

// account adds a compared job to the counters.
func (tw *twin) account(j *job) {
	r := tw.res
	d := j.ans[sideDirect]
	r.ClientRequests++
	if d.status < 200 || d.status > 299 {
		r.DirectErrors++
	}
	if j.err != nil {
		r.Violations++
		tw.sample(j)
	}
	if tw.checker != nil {
		tw.accountShared(j)
	}
	tw.trackRow(j)
	k := &r.ByKind[j.c.kind]
	k.Requests++
	if j.poll {
		k.Polls++
	}
	for s := range numSides {
		k.Upstream[s] += int64(j.up[s])
		k.Bytes[s] += int64(j.upBytes[s])
		k.Wire[s] += int64(j.upWire[s])
		k.CPU[s] += j.cpu[s]
	}
	if !j.unusual {
		tw.creds[credential(j.c)] = true
	}
	if j.converted() && !j.unusual && d.status == http.StatusOK {
		tw.snapRows[credential(j.c)] = j.rows
	}
}

// sample keeps the first few violations, one per distinct difference:
// a stale row repeats in every answer that lists it.
func (tw *twin) sample(j *job) {
	msg := j.err.Error()
	if len(tw.res.Samples) >= 5 || tw.seen[msg] {
		return
	}
	tw.seen[msg] = true
	form := j.form.Encode()
	if j.modern {
		form = fmt.Sprintf("%s, last_update_id %d (direct %d)", form, j.cursor[sideModule], j.cursor[sideDirect])
	}
	tw.res.Samples = append(tw.res.Samples, fmt.Sprintf("%s (user %d) at +%ds, %s: %s", j.c.kind, j.c.user.id, j.sec, form, msg))
}

// trackRow counts a lost (or extra) write when the sender's row starts to
// differ between the sides.
func (tw *twin) trackRow(j *job) {
	same := twinrig.SameRow(j.row[sideDirect], j.row[sideModule])
	uid := j.c.user.id
	if !same && !tw.diverged[uid] {
		tw.res.LostWrites++
	}
	tw.diverged[uid] = !same
}

// credential names the module session a client's requests fall in.
func credential(c *client) string {
	if c.kind == KindWeb {
		return "w" + c.session[sideModule]
	}
	return "a" + c.user.basic[sideModule]
}

// sampleMinute records the upstream counters of the minute that ended.
func (tw *twin) sampleMinute(m int) {
	var min Minute
	for s := range numSides {
		st := tw.realm(side(s)).Stats()
		min.Requests[s] = requests(st) - requests(tw.last[s])
		min.Bytes[s] = st.ResponseBytes - tw.last[s].ResponseBytes
		tw.last[s] = st
	}
	min.IdealRequests = float64(tw.online[m]) / idealWriteEvery
	min.IdealBytes = tw.ideal.minuteBytes[m]
	tw.res.Minutes = append(tw.res.Minutes, min)
}

// requests sums the answered API requests; presence_error counts a subset
// of presence again.
func requests(st zuliptest.Stats) int64 {
	var n int64
	for k, v := range st.Requests {
		if k != "presence_error" {
			n += v
		}
	}
	return n
}

// finish stops the workers and collects the totals, the final row check,
// the module's own counters and the memory its store held.
func (tw *twin) finish() {
	r := tw.res
	for s, w := range tw.workers {
		close(w.in)
		r.SideBusy[s] = w.busy
		r.ServerCPU[s] = w.upCPU
		if side(s) == sideModule {
			r.ProxyCPU = w.cpu - w.upCPU
		}
	}
	for s := range numSides {
		st := tw.realm(side(s)).Stats()
		r.Totals[s] = Totals{Requests: requests(st), Bytes: st.ResponseBytes, Wire: st.WireBytes, RowsRead: st.RowsReturned, RowsWritten: st.RowsWritten}
	}
	r.CompareBusy = tw.cmp.busy
	r.Ideal = tw.ideal.totals(r.Totals[sideDirect].RowsWritten, tw.online)
	r.RowMismatches = tw.rowMismatches()
	r.Sessions = len(tw.creds)
	r.Outcomes = diffCounters(gatherCounters(tw.metrics), tw.before)
	if tw.checker != nil {
		st := stalenessOf(tw.stale, tw.viewAged)
		st.Searched, st.Renders, st.MaxBack = r.Staleness.Searched, r.Staleness.Renders, r.Staleness.MaxBack
		r.Staleness = st
	}
	r.StoreAccounted = gatherGauge(tw.metrics, "caddy_zulip_presence_store_bytes")
	for _, n := range tw.snapRows {
		r.SnapshotRows += int64(n)
	}
	tw.release()
}

// release drops the handlers and measures the heap their stores freed.
func (tw *twin) release() {
	held := heapAlloc()
	for _, release := range tw.releases {
		_ = release()
	}
	tw.hs, tw.releases = nil, nil
	tw.res.StoreHeap = held - heapAlloc() - tw.res.StoreFixed
}

// maxUpdateID is the realm's presence_last_update_id: the newest row's id.
func (tw *twin) maxUpdateID(s side) int64 {
	var n int64
	for _, id := range tw.ids {
		n = max(n, tw.realm(s).PresenceRow(id).LastUpdateID)
	}
	return n
}

// pageLoadCursor is the presence_last_update_id a page load (/register)
// hands a new web tab on side s. Only call it between dispatches.
func (tw *twin) pageLoadCursor(s side) int64 { return tw.workers[s].seq }

// rowMismatches counts users whose presence rows differ between the sides:
// a lost or extra write.
func (tw *twin) rowMismatches() int {
	n := 0
	for _, id := range tw.ids {
		if d, p := tw.Rows(id); !twinrig.SameRow(d, p) {
			n++
		}
	}
	return n
}

// heapAlloc returns the live heap after two collections (the second
// empties the sync.Pools' victim caches).
func heapAlloc() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// gatherCounters reads the handler's request counters by kind and
// outcome, and its comparisons with the server (shadow mode, verify_rate)
// by result, all kinds together, under "verify/<result>".
func gatherCounters(g prometheus.Gatherer) map[string]float64 {
	out := map[string]float64{}
	mfs, err := g.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		verify := mf.GetName() == "caddy_zulip_presence_verify_total"
		if mf.GetName() != "caddy_zulip_presence_requests_total" && !verify {
			continue
		}
		for _, m := range mf.GetMetric() {
			var kind, outcome string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "kind":
					kind = l.GetValue()
				case "outcome", "result":
					outcome = l.GetValue()
				}
			}
			if verify {
				kind = "verify"
			}
			out[kind+"/"+outcome] += m.GetCounter().GetValue()
		}
	}
	return out
}

// gatherGauge reads one gauge of the handler's metrics.
func gatherGauge(g prometheus.Gatherer, name string) float64 {
	mfs, err := g.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// diffCounters subtracts the counters at the start: the handler's
// collectors are process-wide.
func diffCounters(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

// runRealm builds, runs and measures one realm with the module side
// configured as v.
func runRealm(spec Spec, seed uint64, v Variant, progress func(minute int)) (*RealmResult, error) {
	tw := newTwin(spec)
	tw.setVariant(v, seed)
	wl := newWorkload(spec, seed, tw)
	wl.setup()
	if err := tw.run(wl, progress); err != nil {
		return nil, err
	}
	return tw.res, nil
}
