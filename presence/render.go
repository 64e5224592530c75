package presence

import (
	"bytes"
	"math"
	"math/bits"
	"slices"
	"strconv"
	"unicode/utf8"
)

// PingAnswer is Zulip's answer to a ping_only request, byte for byte.
var PingAnswer = []byte("{\"result\":\"success\",\"msg\":\"\"}\n")

// Envelope holds the envelope fields of a presence answer the handler
// renders (Decoded is the other direction: an answer from upstream).
type Envelope struct {
	// ServerTimestamp is server_timestamp, always written as a float the
	// way orjson writes it (null if not finite).
	ServerTimestamp float64
	// LastUpdateID is presence_last_update_id.
	LastUpdateID int64
	// Ignored is ignored_parameters_unsupported, in the order given
	// (Zulip sorts it); the key is omitted when Ignored is empty.
	Ignored []string
	// LegacyOffset is the server's
	// PRESENCE_LEGACY_EVENT_OFFSET_FOR_ACTIVITY_SECONDS, which legacy
	// answers derive their status with (see LegacyStatus); Zulip's
	// default is DefaultLegacyOffset.
	LegacyOffset int64
}

// Expected sizes, so that one Grow covers a whole answer in the usual case.
const (
	envelopeBytes  = 128
	modernRowBytes = 72
	legacyRowBytes = 170
)

// AppendModern appends the modern (slim) answer for rows to dst, exactly as
// Zulip's orjson writes it: compact, in the given row order, newline at the
// end. The caller selects the rows (see InWindow).
func AppendModern(dst []byte, rows []Row, a Envelope) []byte {
	dst = slices.Grow(dst, envelopeBytes+len(rows)*modernRowBytes)
	dst = append(dst, `{"result":"success","msg":"","presences":{`...)
	for i, r := range rows {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '"')
		dst = appendInt(dst, r.UserID)
		dst = append(dst, `":{"active_timestamp":`...)
		dst = appendInt(dst, r.Active)
		dst = append(dst, `,"idle_timestamp":`...)
		dst = appendInt(dst, r.Idle)
		dst = append(dst, '}')
	}
	return appendEnvelopeEnd(dst, a)
}

// legacyText is the constant text around a legacy entry's timestamps, so
// that an entry takes five appends.
type legacyText struct{ head, middle string }

var (
	legacyActive = legacyText{
		head:   `:{"aggregated":{"client":"website","status":"active","timestamp":`,
		middle: `},"website":{"client":"website","status":"active","timestamp":`,
	}
	legacyIdle = legacyText{
		head:   `:{"aggregated":{"client":"website","status":"idle","timestamp":`,
		middle: `},"website":{"client":"website","status":"idle","timestamp":`,
	}
)

// AppendLegacy appends the legacy answer for rows to dst, keyed by
// email(userID), with the status derived by LegacyStatus, exactly as
// Zulip's orjson writes it.
func AppendLegacy(dst []byte, rows []Row, email func(userID int64) string, a Envelope) []byte {
	dst = slices.Grow(dst, envelopeBytes+len(rows)*legacyRowBytes)
	dst = append(dst, `{"result":"success","msg":"","presences":{`...)
	for i, r := range rows {
		if i > 0 {
			dst = append(dst, ',')
		}
		status, ts := LegacyStatus(r.Presence, a.LegacyOffset)
		text := legacyIdle
		if status == "active" {
			text = legacyActive
		}
		dst = appendJSONString(dst, email(r.UserID))
		dst = append(dst, text.head...)
		dst = appendInt(dst, ts)
		dst = append(dst, text.middle...)
		dst = appendInt(dst, ts)
		dst = append(dst, `,"pushable":false}}`...)
	}
	return appendEnvelopeEnd(dst, a)
}

// appendEnvelopeEnd closes presences and appends the keys that follow it,
// in Zulip's insertion order.
func appendEnvelopeEnd(dst []byte, a Envelope) []byte {
	dst = append(dst, `},"server_timestamp":`...)
	dst = appendJSONFloat(dst, a.ServerTimestamp)
	dst = append(dst, `,"presence_last_update_id":`...)
	dst = strconv.AppendInt(dst, a.LastUpdateID, 10)
	dst = appendIgnored(dst, a.Ignored)
	return append(dst, "}\n"...)
}

// appendJSONFloat writes f as orjson does (Rust's ryu): the shortest
// digits that read back as f, fixed notation with at least one fractional
// digit for decimal exponents in [-5, 16), else 1.5e-7 or 1e16; null where
// JSON has no number. For every server_timestamp Zulip can send this equals
// Python's repr.
func appendJSONFloat(dst []byte, f float64) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	if f == 0 {
		if math.Signbit(f) {
			return append(dst, "-0.0"...)
		}
		return append(dst, "0.0"...)
	}
	// Go's shortest 'e' form, d.ddde±XX, holds the digits and the exponent.
	var buf [32]byte
	e := strconv.AppendFloat(buf[:0], f, 'e', -1, 64)
	if e[0] == '-' {
		dst = append(dst, '-')
		e = e[1:]
	}
	mark := bytes.IndexByte(e, 'e')
	exp := atoiExp(e[mark+1:])
	if exp < -5 || exp >= 16 {
		dst = append(dst, e[:mark+1]...)
		return strconv.AppendInt(dst, int64(exp), 10)
	}
	var digitsBuf [24]byte
	digits := append(digitsBuf[:0], e[0])
	if mark > 1 {
		digits = append(digits, e[2:mark]...) // skip the point
	}
	return appendFixed(dst, digits, exp+1)
}

// atoiExp reads the signed exponent strconv writes after 'e'.
func atoiExp(b []byte) int {
	n := 0
	for _, c := range b[1:] {
		n = n*10 + int(c-'0')
	}
	if b[0] == '-' {
		return -n
	}
	return n
}

// appendFixed writes the decimal 0.digits × 10^point in fixed notation with
// at least one digit after the point.
func appendFixed(dst, digits []byte, point int) []byte {
	switch {
	case point <= 0:
		dst = append(dst, '0', '.')
		for range -point {
			dst = append(dst, '0')
		}
		return append(dst, digits...)
	case point >= len(digits):
		dst = append(dst, digits...)
		for range point - len(digits) {
			dst = append(dst, '0')
		}
		return append(dst, '.', '0')
	}
	dst = append(dst, digits[:point]...)
	dst = append(dst, '.')
	return append(dst, digits[point:]...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string the way orjson escapes it:
// UTF-8 kept, '"' and '\\' escaped, control characters as \b \f \n \r \t or
// lowercase \u00XX. Invalid UTF-8, which a Python string cannot hold,
// becomes U+FFFD.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				dst = append(dst, s[start:i]...)
				dst = append(dst, "\ufffd"...)
				start = i + 1
			}
			i += size
			continue
		}
		if c >= ' ' && c != '"' && c != '\\' {
			i++
			continue
		}
		dst = append(dst, s[start:i]...)
		dst = appendEscaped(dst, c)
		i++
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendEscaped(dst []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(dst, '\\', c)
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	return append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
}

// digitPairs holds "00" through "99" for two-digits-at-a-time formatting.
const digitPairs = "00010203040506070809" +
	"10111213141516171819" +
	"20212223242526272829" +
	"30313233343536373839" +
	"40414243444546474849" +
	"50515253545556575859" +
	"60616263646566676869" +
	"70717273747576777879" +
	"80818283848586878889" +
	"90919293949596979899"

// appendInt is strconv.AppendInt(dst, n, 10) writing straight into dst's
// spare capacity: answers are mostly integers, and strconv's detour through
// a scratch buffer costs a third of the rendering time.
func appendInt(dst []byte, n int64) []byte {
	u := uint64(n)
	if n < 0 {
		dst = append(dst, '-')
		u = -u
	}
	if u < 10 {
		return append(dst, byte('0'+u))
	}
	dst = slices.Grow(dst, 20)
	end := len(dst) + decimalLen(u)
	dst = dst[:end]
	i := end
	for u >= 1<<32 {
		q := u / 100
		j := (u - q*100) * 2
		i -= 2
		dst[i], dst[i+1] = digitPairs[j], digitPairs[j+1]
		u = q
	}
	// Timestamps and ids fit 32 bits, where division is cheaper.
	v := uint32(u)
	for v >= 100 {
		q := v / 100
		j := (v - q*100) * 2
		i -= 2
		dst[i], dst[i+1] = digitPairs[j], digitPairs[j+1]
		v = q
	}
	if v >= 10 {
		dst[i-2], dst[i-1] = digitPairs[v*2], digitPairs[v*2+1]
	} else {
		dst[i-1] = byte('0' + v)
	}
	return dst
}

// pow10 holds 10^i for every i a uint64 can reach.
var pow10 = [...]uint64{
	1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
	1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19,
}

// decimalLen returns the number of decimal digits of u >= 1.
func decimalLen(u uint64) int {
	// 1233/4096 is just above log10(2): n is the digit count or one less.
	n := bits.Len64(u) * 1233 >> 12
	if u >= pow10[n] {
		n++
	}
	return n
}
