package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
)

// defaultVerifyRate is the share of the requests the handler answers
// itself that are verified when verify_rate is not set: each costs one
// upstream request more (two for a ping: the original and a read of the
// row), so 1 % costs at most 2 % more of the requests the handler saves.
const defaultVerifyRate = 0.01

// verifyRate is verify_rate as configured, or its default; 0 against a
// server that stores every write, where a resent original would be stored
// again.
func (h *Handler) verifyRate() float64 {
	switch {
	case h.VerifyRate != nil:
		return *h.VerifyRate
	case h.storesEveryWrite():
		return 0
	}
	return defaultVerifyRate
}

// mismatchLogSize bounds the mismatches the admin endpoint lists.
const mismatchLogSize = 64

// Mismatch is one answer the handler gave (or would have given) that
// differs from the server's, as the admin endpoint lists it: never
// credentials nor bodies, only user ids and the values that differ.
type Mismatch struct {
	Time        time.Time `json:"time"`
	Mode        string    `json:"mode"` // "shadow" or "verify"
	Kind        string    `json:"kind"`
	Host        string    `json:"host"`
	UserID      int64     `json:"user_id,omitempty"`
	Differences []string  `json:"differences"`
}

// mismatchLog keeps the latest mismatches of every handler in the
// process, newest last; Caddy's admin endpoint is one per process too.
var mismatchLog struct {
	sync.Mutex
	entries []Mismatch
}

func logMismatch(m Mismatch) {
	mismatchLog.Lock()
	defer mismatchLog.Unlock()
	if len(mismatchLog.entries) == mismatchLogSize {
		copy(mismatchLog.entries, mismatchLog.entries[1:])
		mismatchLog.entries = mismatchLog.entries[:mismatchLogSize-1]
	}
	mismatchLog.entries = append(mismatchLog.entries, m)
}

// recentMismatches returns a copy of the mismatch log, newest last.
func recentMismatches() []Mismatch {
	mismatchLog.Lock()
	defer mismatchLog.Unlock()
	return append([]Mismatch{}, mismatchLog.entries...)
}

func serveMismatches(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method not allowed")}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(recentMismatches())
}

// reportVerify counts one comparison and, for a mismatch, logs it at warn
// level and keeps it for the admin endpoint.
func (c *call) reportVerify(result string, diffs []presence.Difference) {
	c.h.metrics.observeVerify(c.kind, result)
	if result != verifyMismatch {
		return
	}
	mode := "verify"
	if c.h.Shadow {
		mode = "shadow"
	}
	m := Mismatch{Time: c.h.now(), Mode: mode, Kind: c.kind, Host: c.host, UserID: c.requesterID()}
	for _, d := range diffs {
		m.Differences = append(m.Differences, c.withoutEmail(d).String())
	}
	logMismatch(m)
	if c.h.onMismatch != nil {
		c.h.onMismatch(m)
	}
	c.h.logger.Warn("answer differs from the server's",
		zap.String("mode", mode), zap.String("kind", m.Kind), zap.String("host", m.Host),
		zap.Int64("user_id", m.UserID), zap.Strings("differences", m.Differences))
}

// withoutEmail names a legacy row by its user id rather than its email.
func (c *call) withoutEmail(d presence.Difference) presence.Difference {
	if d.Key == "" {
		return d
	}
	if _, err := strconv.ParseInt(d.Key, 10, 64); err == nil {
		return d
	}
	email := d.Key
	d.Key = "user ?"
	if dir := c.h.store.Directory(c.host, c.h.now()); dir != nil {
		for id, m := range dir.Members {
			if m.Email == email {
				d.Key = "user " + strconv.FormatInt(id, 10)
				break
			}
		}
	}
	return d
}
