package zuliptest

import (
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Server is an in-memory Zulip server. It is an http.Handler: requests are
// answered by the realm their Host names (the default realm when no realm
// is registered for it), and paths under /_sim/ reach the control API.
// All methods are safe for concurrent use.
type Server struct {
	now func() time.Time

	// mu guards all state of the server and its realms. One lock keeps
	// the simulator simple; presence bodies are rendered outside it.
	mu     sync.Mutex
	realms map[string]*Realm
	def    *Realm
	lastID int64
	keys   map[string]*user // API keys are unique across the server
	rng    *rand.Rand
	demo   *demo

	settings ServerSettings

	// gzipLevel is the gzip_comp_level of the nginx in front of the
	// server, 0 for none (gzip.go).
	gzipLevel atomic.Int32

	control *http.ServeMux
}

// New returns a server with one default realm, no users,
// DefaultServerSettings and Zulip's nginx compression in front
// (SetGzipLevel). The clock is
// now, or time.Now when now is nil; it must be safe for concurrent use and
// must not call back into the server. API keys and session IDs come from
// a source seeded the same way for every server, so runs are repeatable.
func New(now func() time.Time) *Server {
	if now == nil {
		now = time.Now
	}
	s := &Server{
		now:    now,
		realms: map[string]*Realm{},
		keys:   map[string]*user{},
		rng:    rand.New(rand.NewPCG(0x7a756c6970, 0x70726573656e6365)),

		settings: DefaultServerSettings(),
	}
	s.gzipLevel.Store(DefaultGzipLevel)
	s.def = newRealm(s, "")
	s.control = s.controlMux()
	return s
}

// ServeHTTP answers Zulip API requests and /_sim/ control requests.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/_sim" || strings.HasPrefix(r.URL.Path, "/_sim/") {
		s.control.ServeHTTP(w, r)
		return
	}
	s.RealmFor(r.Host).serveAPI(w, r)
}

// DefaultRealm returns the realm that answers every Host without a realm
// of its own.
func (s *Server) DefaultRealm() *Realm {
	return s.def
}

// AddRealm returns a new, empty realm answering for host (the port is
// ignored, case does not matter). If host already has a realm, that realm
// is returned; an empty host is the default realm.
func (s *Server) AddRealm(host string) *Realm {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addRealmLocked(host)
}

func (s *Server) addRealmLocked(host string) *Realm {
	h := normalizeHost(host)
	if h == "" {
		return s.def
	}
	if rm := s.realms[h]; rm != nil {
		return rm
	}
	rm := newRealm(s, h)
	s.realms[h] = rm
	return rm
}

// RealmFor returns the realm answering for host, the default realm if
// none is registered for it.
func (s *Server) RealmFor(host string) *Realm {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rm := s.realms[normalizeHost(host)]; rm != nil {
		return rm
	}
	return s.def
}

// normalizeHost strips the port, a trailing dot and letter case, as Zulip
// matches subdomains on the bare host name.
func normalizeHost(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.Trim(host, "[]"), ".")
	return strings.ToLower(host)
}

const alphanumerics = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func (s *Server) randomLocked(n int, alphabet string) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[s.rng.IntN(len(alphabet))]
	}
	return string(b)
}

// newKeyLocked returns an unused API key: 32 alphanumerics, like
// generate_api_key.
func (s *Server) newKeyLocked() string {
	for {
		if key := s.randomLocked(32, alphanumerics); s.keys[key] == nil {
			return key
		}
	}
}

// setKeyLocked replaces u's API key.
func (s *Server) setKeyLocked(u *user, key string) {
	if u.APIKey != "" {
		delete(s.keys, u.APIKey)
	}
	u.APIKey = key
	s.keys[key] = u
}
