package zuliptest

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// FaultMode is what a Faults handler does to a request it faults.
type FaultMode int

// The faults a Faults handler can inject. Modes that cut the connection
// hijack it, so they need an HTTP/1.x server; on any other they abort the
// request with http.ErrAbortHandler instead.
const (
	// FaultNone passes the request to the wrapped handler.
	FaultNone FaultMode = iota
	// FaultResetMidBody lets the wrapped handler answer, sends the
	// answer's status, headers (with the full Content-Length) and the
	// first half of its body, then closes the connection with SO_LINGER
	// 0, so that the client reads part of the body and then a reset.
	FaultResetMidBody
	// FaultResetBeforeHeaders resets the connection before anything is
	// answered; the wrapped handler never sees the request.
	FaultResetBeforeHeaders
	// FaultSlow waits Fault.Delay, then lets the wrapped handler answer.
	// If the request is canceled while waiting, nothing is answered and
	// the wrapped handler never sees it.
	FaultSlow
	// FaultTruncated is FaultResetMidBody with an orderly close: the
	// client reads part of the body, then an end of file before the
	// Content-Length is reached.
	FaultTruncated
	// FaultNotJSON answers 200 with an HTML page, as a captive portal or
	// a misrouted proxy would; the wrapped handler never sees the request.
	FaultNotJSON
	// Fault500 answers 500 with an HTML page; the wrapped handler never
	// sees the request.
	Fault500
	// Fault502 answers 502 with an HTML page, as a gateway in front of a
	// dead server would; the wrapped handler never sees the request.
	Fault502
)

var faultNames = [...]string{"none", "reset-mid-body", "reset-before-headers", "slow", "truncated", "not-json", "500", "502"}

// String returns a short name of the mode, such as "reset-mid-body".
func (m FaultMode) String() string {
	if m >= 0 && int(m) < len(faultNames) {
		return faultNames[m]
	}
	return "FaultMode(" + strconv.Itoa(int(m)) + ")"
}

// Fault is the setting of a Faults handler. The zero Fault passes every
// request through.
type Fault struct {
	// Mode is what happens to the requests the fault applies to.
	Mode FaultMode
	// Delay is how long FaultSlow waits before answering.
	Delay time.Duration
	// Count, when positive, limits the fault to the next Count requests
	// it applies to; after them the handler passes everything through,
	// as if the fault had been set to FaultNone.
	Count int
	// Path, when not empty, limits the fault to requests whose URL path
	// is exactly Path; other requests pass through and do not use up
	// Count.
	Path string
}

// Faults is an http.Handler that wraps another one, normally a *Server,
// and injects upstream failures into its answers: connection resets
// before or in the middle of an answer, slow and truncated answers, and
// HTML where JSON is expected. The fault can be changed at any time with
// SetFault, also while requests are being served; each request follows
// the fault set when it arrived. All methods are safe for concurrent use.
type Faults struct {
	next http.Handler

	mu      sync.Mutex
	fault   Fault
	left    int // requests the fault still applies to, when fault.Count > 0
	faulted int
}

// NewFaults returns a handler that passes every request to next until a
// fault is set.
func NewFaults(next http.Handler) *Faults {
	return &Faults{next: next}
}

// SetFault replaces the current fault; its Count starts afresh.
func (f *Faults) SetFault(fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fault, f.left = fault, fault.Count
}

// Faulted returns the number of requests a fault other than FaultNone
// has been applied to.
func (f *Faults) Faulted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.faulted
}

// take returns the fault that applies to r and counts r against it.
func (f *Faults) take(r *http.Request) Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	fault := f.fault
	if fault.Mode == FaultNone || (fault.Path != "" && r.URL.Path != fault.Path) {
		return Fault{}
	}
	if fault.Count > 0 {
		f.left--
		if f.left <= 0 {
			f.fault = Fault{}
		}
	}
	f.faulted++
	return fault
}

// ServeHTTP answers r as the fault in effect says.
func (f *Faults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fault := f.take(r)
	switch fault.Mode {
	case FaultResetMidBody:
		f.cut(w, r, true)
	case FaultResetBeforeHeaders:
		reset(hijack(w))
	case FaultSlow:
		t := time.NewTimer(fault.Delay)
		defer t.Stop()
		select {
		case <-t.C:
			f.next.ServeHTTP(w, r)
		case <-r.Context().Done():
		}
	case FaultTruncated:
		f.cut(w, r, false)
	case FaultNotJSON:
		htmlPage(w, http.StatusOK, "<title>Zulip</title></head><body><h1>Sign in to continue</h1>")
	case Fault500:
		htmlPage(w, http.StatusInternalServerError, "<title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1>")
	case Fault502:
		htmlPage(w, http.StatusBadGateway, "<title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center>")
	default:
		f.next.ServeHTTP(w, r)
	}
}

func htmlPage(w http.ResponseWriter, status int, inner string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, "<!DOCTYPE html>\n<html><head>%s</body></html>\n", inner)
}

// cut sends the wrapped handler's answer with the full Content-Length but
// only the first half of its body, then closes the connection: with a
// reset when rst is true, else with an orderly close.
func (f *Faults) cut(w http.ResponseWriter, r *http.Request, rst bool) {
	rec := httptest.NewRecorder()
	f.next.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	conn := hijack(w)
	bw := bufio.NewWriter(conn)
	hdr := rec.Header().Clone()
	hdr.Del("Transfer-Encoding")
	// An empty body is declared one byte long, so that it is cut too.
	hdr.Set("Content-Length", strconv.Itoa(max(len(body), 1)))
	_, _ = fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", rec.Code, http.StatusText(rec.Code))
	_ = hdr.Write(bw)
	_, _ = bw.WriteString("\r\n")
	_, _ = bw.Write(body[:len(body)/2])
	_ = bw.Flush()
	if rst {
		reset(conn)
		return
	}
	_ = conn.Close()
}

// hijack takes the connection over from the server. Where that is not
// possible (HTTP/2), it aborts the request instead, which resets the
// stream.
func hijack(w http.ResponseWriter) net.Conn {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	return conn
}

// reset closes conn so that the peer gets a TCP reset (RST) rather than
// an end of file: with SO_LINGER 0, close discards unsent data and resets.
func reset(conn net.Conn) {
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}
