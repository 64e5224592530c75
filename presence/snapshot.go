package presence

import (
	"sync"
	"unsafe"
)

// Presence is one user's presence row as Zulip's modern format gives it.
type Presence struct {
	// Active is active_timestamp: the last time the user was active.
	Active int64
	// Idle is idle_timestamp: the last time any client of the user was
	// connected.
	Idle int64
}

// Row is a Presence keyed by user id.
type Row struct {
	// UserID is the Zulip user id, the key of a modern presences entry.
	UserID int64
	Presence
}

// DefaultLegacyOffset is Zulip's default
// PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS (zproject/default_settings.py),
// which a server's settings.py may change.
const DefaultLegacyOffset = 70

// secondsPerDay converts history_limit_days to seconds.
const secondsPerDay = 86400

// Snapshot is the presence table of one session: rows kept sorted by user
// id in a single slice, 24 bytes a row. It is not safe for concurrent use.
type Snapshot struct {
	rows []Row
}

// snapshotOverhead is what a Snapshot costs besides its rows.
const snapshotOverhead = int64(unsafe.Sizeof(Snapshot{}))

// rowSize is the cost of a row: three int64s, no pointers.
const rowSize = int64(unsafe.Sizeof(Row{}))

// Replace sets the snapshot to the rows of a full fetch. It copies rows, so
// the caller keeps ownership of its slice. Duplicate user ids keep the last
// row, as a JSON object read into a Python dict would. Slices returned by
// Rows before the call may be overwritten.
func (s *Snapshot) Replace(rows []Row) {
	// Reuse the old array unless it would hold much more than needed.
	if cap(s.rows) < len(rows) || cap(s.rows) > 2*len(rows)+16 {
		s.rows = make([]Row, len(rows))
	}
	s.rows = s.rows[:len(rows)]
	copy(s.rows, rows)
	if isStrictlySorted(s.rows) {
		return
	}
	buf := getScratch(len(rows))
	sorted := sortUnique(s.rows, buf.tmp)
	s.rows = s.rows[:copy(s.rows, sorted)]
	putScratch(buf)
}

// Merge upserts the rows of a modern delta: each row replaces the row of
// the same user or is added. The delta may be unsorted and may repeat a
// user (the last row wins); Merge does not modify it. Slices returned by
// Rows before the call may be overwritten.
func (s *Snapshot) Merge(delta []Row) {
	if len(delta) == 0 {
		return
	}
	buf := getScratch(len(delta))
	buf.rows = append(buf.rows[:0], delta...)
	s.merge(sortUnique(buf.rows, buf.tmp))
	putScratch(buf)
}

// scratchBuf holds the two arrays a sort needs.
type scratchBuf struct {
	rows, tmp []Row
}

// scratch keeps sort arrays between calls, so that a steady-state Merge
// allocates nothing and no snapshot pays for the space.
var scratch = sync.Pool{New: func() any { return new(scratchBuf) }}

// maxScratchRows keeps an unusually large buffer out of the pool.
const maxScratchRows = 1 << 16

func getScratch(n int) *scratchBuf {
	buf := scratch.Get().(*scratchBuf)
	if cap(buf.tmp) < n {
		buf.tmp = make([]Row, n)
	}
	buf.tmp = buf.tmp[:n]
	return buf
}

func putScratch(buf *scratchBuf) {
	if cap(buf.rows) <= maxScratchRows && cap(buf.tmp) <= maxScratchRows {
		scratch.Put(buf)
	}
}

// merge upserts d, sorted and unique, into s.rows.
func (s *Snapshot) merge(d []Row) {
	// Update the rows that exist in place and move the new ones to the
	// front of d, so only those need room.
	added, i := 0, 0
	for _, r := range d {
		i = searchFrom(s.rows, i, r.UserID)
		if i < len(s.rows) && s.rows[i].UserID == r.UserID {
			s.rows[i].Presence = r.Presence
			continue
		}
		d[added] = r
		added++
	}
	if added == 0 {
		return
	}
	d = d[:added]
	n := len(s.rows) + added
	if n > cap(s.rows) {
		grown := make([]Row, n, n+n/8+8)
		mergeInto(grown, s.rows, d)
		s.rows = grown
		return
	}
	m := len(s.rows)
	s.rows = s.rows[:n]
	mergeBackward(s.rows, m, d)
}

// Get returns the row of a user, if the snapshot holds one.
func (s *Snapshot) Get(userID int64) (Presence, bool) {
	if i := searchFrom(s.rows, 0, userID); i < len(s.rows) && s.rows[i].UserID == userID {
		return s.rows[i].Presence, true
	}
	return Presence{}, false
}

// searchFrom returns the index of the first row at or after i whose user id
// is at least id. It gallops from i, so a dense delta costs a linear pass
// over the snapshot and a sparse one a few binary searches.
func searchFrom(rows []Row, i int, id int64) int {
	lo, hi, step := i, i, 1
	for hi < len(rows) && rows[hi].UserID < id {
		lo = hi + 1
		hi = lo + step
		step <<= 1
	}
	hi = min(hi, len(rows))
	// Now rows[lo-1] < id, and rows[hi] >= id unless hi == len(rows).
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if rows[mid].UserID < id {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// mergeInto merges sorted a and b, with disjoint ids, into dst.
func mergeInto(dst, a, b []Row) {
	i, j := 0, 0
	for k := range dst {
		if j == len(b) || i < len(a) && a[i].UserID < b[j].UserID {
			dst[k] = a[i]
			i++
		} else {
			dst[k] = b[j]
			j++
		}
	}
}

// mergeBackward merges dst[:n] and b, sorted with disjoint ids, into dst,
// filling it from the end so no row is overwritten before it is moved.
func mergeBackward(dst []Row, n int, b []Row) {
	i, j := n-1, len(b)-1
	for k := len(dst) - 1; j >= 0; k-- {
		if i >= 0 && dst[i].UserID > b[j].UserID {
			dst[k] = dst[i]
			i--
		} else {
			dst[k] = b[j]
			j--
		}
	}
}

// sortUnique sorts rows by user id, keeping only the last of equal ids, and
// returns the result, which lives in rows or in tmp (len(tmp) >= len(rows)).
func sortUnique(rows, tmp []Row) []Row {
	if isStrictlySorted(rows) {
		return rows
	}
	// Stable, so that the last of equal ids is still the last one.
	rows = stableSort(rows, tmp)
	out := 0
	for i := range rows {
		if i+1 < len(rows) && rows[i+1].UserID == rows[i].UserID {
			continue
		}
		rows[out] = rows[i]
		out++
	}
	return rows[:out]
}

// insertionSortMax is the size below which insertion sort beats radix.
const insertionSortMax = 32

// stableSort sorts rows by user id, keeping equal ids in order, and returns
// the result, which lives in rows or in tmp. It is an LSD radix sort over
// the bytes that differ between ids: two passes for ids below 65536.
func stableSort(rows, tmp []Row) []Row {
	if len(rows) <= insertionSortMax {
		insertionSort(rows)
		return rows
	}
	or, and := uint64(0), ^uint64(0)
	for _, r := range rows {
		or |= sortKey(r)
		and &= sortKey(r)
	}
	varying := or ^ and
	src, dst := rows, tmp[:len(rows)]
	for shift := 0; shift < 64; shift += 8 {
		if varying>>shift&0xff == 0 {
			continue
		}
		var start [256]int
		for _, r := range src {
			start[byte(sortKey(r)>>shift)]++
		}
		sum := 0
		for i, n := range start {
			start[i] = sum
			sum += n
		}
		for _, r := range src {
			b := byte(sortKey(r) >> shift)
			dst[start[b]] = r
			start[b]++
		}
		src, dst = dst, src
	}
	return src
}

// sortKey maps user ids to unsigned keys in the same order.
func sortKey(r Row) uint64 { return uint64(r.UserID) ^ 1<<63 }

func insertionSort(rows []Row) {
	for i := 1; i < len(rows); i++ {
		for j := i; j > 0 && rows[j-1].UserID > rows[j].UserID; j-- {
			rows[j-1], rows[j] = rows[j], rows[j-1]
		}
	}
}

func isStrictlySorted(rows []Row) bool {
	for i := 1; i < len(rows); i++ {
		if rows[i-1].UserID >= rows[i].UserID {
			return false
		}
	}
	return true
}

// Len returns the number of rows.
func (s *Snapshot) Len() int { return len(s.rows) }

// Rows returns the rows sorted by user id. The slice belongs to the
// snapshot: do not modify it, and do not use it after the next Replace or
// Merge.
func (s *Snapshot) Rows() []Row { return s.rows }

// SizeBytes returns the heap bytes the snapshot holds, for cache cost
// accounting.
func (s *Snapshot) SizeBytes() int64 {
	return int64(cap(s.rows))*rowSize + snapshotOverhead
}

// InWindow reports whether Zulip's full fetch would include p: its
// last_connected_time is within days of serverTimestamp. Only the truncated
// idle_timestamp is known, so a row can differ within the window's last
// second. days == 0 selects nothing, and negative days put the cutoff in
// the future.
func InWindow(p Presence, serverTimestamp float64, days int64) bool {
	if days == 0 {
		return false
	}
	return float64(p.Idle) >= serverTimestamp-float64(days)*secondsPerDay
}

// LegacyStatus derives the legacy status of p: "active" with the active
// timestamp when active_timestamp+offset >= idle_timestamp, else "idle"
// with the idle timestamp. offset is the server's
// PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS (never negative).
func LegacyStatus(p Presence, offset int64) (status string, timestamp int64) {
	// Compare without overflow, as Python's unbounded ints do: the
	// difference of two int64s always fits in a uint64.
	if p.Active >= p.Idle || uint64(p.Idle)-uint64(p.Active) <= uint64(offset) {
		return "active", p.Active
	}
	return "idle", p.Idle
}
