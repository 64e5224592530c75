package caddymodule

import (
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// A full poll may carry parameters the presence view does not take (a
// script's note=cron): Zulip lists them in ignored_parameters_unsupported
// and otherwise ignores them (client excepted, which its middleware reads
// and never lists). Such a poll is converted like any other, its extras
// carried on the fetch exactly as they came, in the body or the query
// string; the conversion is used only when the server's answer lists every
// extra it must, which proves that the server ignored them. Otherwise the
// original request is sent as it came, and the host is noted as reading
// that name, so that until the next resync_interval such polls go
// upstream as they came without a wasted fetch.

// fetchRequest builds the upstream request of a conversion or of a view's
// fetch: form as a urlencoded body, followed by the extras that came in
// the body, and the extras that came in the query string as its query.
func (c *call) fetchRequest(form string) *http.Request {
	body := []byte(form)
	var query []byte
	for _, e := range c.extras {
		if e.Query {
			query = appendField(query, e.Field)
		} else {
			body = appendField(body, e.Field)
		}
	}
	sub := subrequest(c.r, http.MethodPost, c.r.URL.Path, body)
	if len(query) > 0 {
		sub.URL.RawQuery = string(query)
		sub.RequestURI = sub.URL.RequestURI()
	}
	return sub
}

func appendField(dst []byte, field string) []byte {
	if len(dst) > 0 {
		dst = append(dst, '&')
	}
	return append(dst, field...)
}

// extrasIgnored reports whether a success answer to a request carrying the
// call's extras listed every one of them that Zulip lists (all but
// client) in ignored_parameters_unsupported, and notes for the host what
// it said of each.
func (c *call) extrasIgnored(listed []string) bool {
	ok := true
	now := c.h.now()
	for _, e := range c.extras {
		if e.Name == "client" {
			continue
		}
		ignored := slices.Contains(listed, e.Name)
		c.h.params.note(c.host, e.Name, ignored, now)
		ok = ok && ignored
	}
	return ok
}

// extrasRead reports whether, within the last resync_interval, the host
// answered a request carrying one of the call's extras without listing it:
// it reads that parameter, so a conversion would only cost a fetch.
func (c *call) extrasRead() bool {
	notBefore := c.h.now().Add(-time.Duration(c.h.ResyncInterval))
	for _, e := range c.extras {
		if e.Name != "client" && c.h.params.read(c.host, e.Name, notBefore) {
			return true
		}
	}
	return false
}

// ignoredFor is the ignored_parameters_unsupported list the server gives
// the request when it ignores the listed names among those the request
// sent: the call's extras (but client), which the fetch's answer listed,
// and history_limit_days when histIgnored. Zulip sorts it.
func (c *call) ignoredFor(histIgnored bool) []string {
	names := presence.IgnoredNames(c.extras)
	if histIgnored {
		names = append(names, "history_limit_days")
		sort.Strings(names)
	}
	return names
}

// paramNotes is what a handler learned, per host, of the extras its
// server reads: a name the server answered without listing it. It is an
// economy, never a condition of fidelity: a note that is missing or lost
// costs one fetch. Both the hosts and the names per host are bounded, as
// both come from clients.
type paramNotes struct {
	mu    sync.Mutex
	hosts map[string][]paramNote
}

type paramNote struct {
	name string
	read bool // the server answered without listing it
	at   time.Time
}

const (
	maxNotedHosts = 1024
	maxHostNotes  = 16
)

func (p *paramNotes) note(host, name string, ignored bool, now time.Time) {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	notes, known := p.hosts[host]
	for i := range notes {
		if notes[i].name == name {
			notes[i] = paramNote{name: name, read: !ignored, at: now}
			return
		}
	}
	if ignored {
		return // what is assumed of a name not noted
	}
	if !known && len(p.hosts) >= maxNotedHosts {
		clear(p.hosts) // rather than track which host is least used
	}
	if p.hosts == nil {
		p.hosts = map[string][]paramNote{}
	}
	if len(notes) >= maxHostNotes {
		notes = slices.Delete(notes, 0, 1) // the oldest
	}
	p.hosts[host] = append(notes, paramNote{name: name, read: true, at: now})
}

// read reports whether the host's latest answer about name, made no
// earlier than notBefore, showed that the server reads it.
func (p *paramNotes) read(host, name string, notBefore time.Time) bool {
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.hosts[host] {
		if n.name == name {
			return n.read && !n.at.Before(notBefore)
		}
	}
	return false
}
