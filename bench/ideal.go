package main

import (
	"sort"
	"strconv"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/presence"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// idealWriteEvery is the ideal's write cadence: one write per online user
// per PRESENCE_UPDATE_MIN_FREQ_SECONDS, since Zulip ignores any sooner one.
const idealWriteEvery = 55.0

// IdealTotals is design §9's lower bound for one realm.
type IdealTotals struct {
	// Requests is one write per online user per 55 s: a client's reads
	// could ride on those writes (design §10, realm-shared reads).
	Requests float64
	// Bytes is, for every poll, Zulip's modern envelope plus the rows that
	// changed since that poller's previous poll (all rows in its window
	// for its first poll).
	Bytes int64
	// RowsRead counts those rows.
	RowsRead int64
	// RowsWritten equals the direct side's: any fewer would lose a write.
	RowsWritten int64
}

// mirrorRow is the ideal's copy of one presence row of the direct side.
type mirrorRow struct {
	connected time.Time
	updateID  int64
	size      int // bytes of its modern entry
}

// change is one row write, in update-id order.
type change struct {
	id   int64
	user int64
}

// ideal follows the direct side's rows and, for every poll, counts what an
// ideal server would have had to send that poller. It runs on the direct
// side's worker, after each direct answer.
type ideal struct {
	realm       *zuliptest.Realm
	rows        []mirrorRow // by user id
	exists      []bool
	log         []change
	seq         int64 // newest update id seen
	stamp       []int // user id → the poll that last counted it
	polls       int
	tot         IdealTotals
	minuteBytes []int64
	buf         []byte
}

func newIdeal(realm *zuliptest.Realm, ids []int64, minutes int) *ideal {
	maxID := int64(0)
	for _, id := range ids {
		maxID = max(maxID, id)
	}
	id := &ideal{
		realm:       realm,
		rows:        make([]mirrorRow, maxID+1),
		exists:      make([]bool, maxID+1),
		stamp:       make([]int, maxID+1),
		minuteBytes: make([]int64, minutes),
	}
	for _, uid := range ids {
		id.refresh(uid)
	}
	return id
}

// refresh reads a user's row and logs it when its update id moved.
func (id *ideal) refresh(uid int64) {
	row := id.realm.PresenceRow(uid)
	if !row.Exists || (id.exists[uid] && row.LastUpdateID == id.rows[uid].updateID) {
		return
	}
	id.exists[uid] = true
	id.rows[uid] = mirrorRow{connected: row.LastConnected, updateID: row.LastUpdateID, size: modernEntrySize(uid, row)}
	id.log = append(id.log, change{id: row.LastUpdateID, user: uid})
	id.seq = max(id.seq, row.LastUpdateID)
}

// observe accounts one direct request. A presence POST can only change
// its sender's row, so only that row is read back.
func (id *ideal) observe(j *job, sec int) {
	id.refresh(j.c.user.id)
	if !j.poll {
		return
	}
	now := clockStart.Add(time.Duration(sec) * time.Second)
	p := j.poller()
	id.polls++
	var n, size int
	if p.idealSeen {
		n, size = id.changedSince(p.idealSeq)
	} else {
		n, size = id.inWindow(now, windowDays(j))
	}
	p.idealSeen, p.idealSeq = true, id.seq
	bytes := int64(id.envelope(now) + size + max(n-1, 0))
	id.tot.RowsRead += int64(n)
	id.tot.Bytes += bytes
	id.minuteBytes[min(sec/60, len(id.minuteBytes)-1)] += bytes
}

// changedSince counts the distinct users whose rows moved past seq, and
// the bytes of their entries.
func (id *ideal) changedSince(seq int64) (n, size int) {
	i := sort.Search(len(id.log), func(i int) bool { return id.log[i].id > seq })
	for _, ch := range id.log[i:] {
		if id.stamp[ch.user] == id.polls {
			continue
		}
		id.stamp[ch.user] = id.polls
		n++
		size += id.rows[ch.user].size
	}
	return n, size
}

// inWindow counts the rows a full fetch returns: connected within days.
func (id *ideal) inWindow(now time.Time, days int) (n, size int) {
	cutoff := now.AddDate(0, 0, -days)
	for uid, ok := range id.exists {
		if ok && !id.rows[uid].connected.Before(cutoff) {
			n++
			size += id.rows[uid].size
		}
	}
	return n, size
}

// envelope is the size of an empty modern answer at now.
func (id *ideal) envelope(now time.Time) int {
	ts := float64(now.UnixNano()) / 1e9
	id.buf = presence.AppendModern(id.buf[:0], nil, presence.Envelope{ServerTimestamp: ts, LastUpdateID: id.seq})
	return len(id.buf)
}

// totals finishes the ideal: writes from the online user-seconds.
func (id *ideal) totals(rowsWritten int64, onlineSeconds []int64) IdealTotals {
	t := id.tot
	t.RowsWritten = rowsWritten
	for _, s := range onlineSeconds {
		t.Requests += float64(s) / idealWriteEvery
	}
	return t
}

// windowDays is the history window a poll asks for.
func windowDays(j *job) int {
	if d, err := strconv.Atoi(j.form.Get("history_limit_days")); err == nil {
		return d
	}
	return 14
}

// Lengths of the fixed parts of a modern entry,
// "ID":{"active_timestamp":A,"idle_timestamp":I}.
const (
	entryHead = len(`"`) + len(`":{"active_timestamp":`)
	entryMid  = len(`,"idle_timestamp":`)
	entryTail = len(`}`)
)

// modernEntrySize is the length of the row's entry in a modern answer.
func modernEntrySize(uid int64, row zuliptest.Row) int {
	active := row.LastActive
	if active.IsZero() {
		active = clockStart // NULL reads as date_joined, the start here
	}
	return entryHead + decimalLen(uid) + decimalLen(active.Unix()) + entryMid + decimalLen(row.LastConnected.Unix()) + entryTail
}

func decimalLen(n int64) int {
	return len(strconv.FormatInt(n, 10))
}
