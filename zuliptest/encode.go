package zuliptest

import (
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
)

// jsonWriter appends compact JSON with keys in the order they are written.
// Zulip serialises Python dicts with orjson, whose output is insertion
// ordered, has no spaces, emits non-ASCII as raw UTF-8 and escapes only what
// JSON requires; encoding/json can do none of the first and escapes more, so
// the bodies are written by hand.
type jsonWriter struct {
	b     []byte
	comma bool
}

func (j *jsonWriter) key(k string) {
	if j.comma {
		j.b = append(j.b, ',')
	}
	j.b = appendJSONString(j.b, k)
	j.b = append(j.b, ':')
	j.comma = false
}

// begin opens an object, as a value after key or as an array element.
func (j *jsonWriter) begin() {
	if j.comma {
		j.b = append(j.b, ',')
	}
	j.b = append(j.b, '{')
	j.comma = false
}

func (j *jsonWriter) end() {
	j.b = append(j.b, '}')
	j.comma = true
}

func (j *jsonWriter) str(k, v string) {
	j.key(k)
	j.b = appendJSONString(j.b, v)
	j.comma = true
}

func (j *jsonWriter) int(k string, v int64) {
	j.key(k)
	j.b = strconv.AppendInt(j.b, v, 10)
	j.comma = true
}

func (j *jsonWriter) bool(k string, v bool) {
	j.key(k)
	j.b = strconv.AppendBool(j.b, v)
	j.comma = true
}

// array opens an array under key k.
func (j *jsonWriter) array(k string) {
	j.key(k)
	j.b = append(j.b, '[')
}

func (j *jsonWriter) endArray() {
	j.b = append(j.b, ']')
	j.comma = true
}

// raw writes a value that is already JSON text.
func (j *jsonWriter) raw(k, v string) {
	j.key(k)
	j.b = append(j.b, v...)
	j.comma = true
}

func (j *jsonWriter) strs(k string, vs []string) {
	j.key(k)
	j.b = append(j.b, '[')
	for i, v := range vs {
		if i > 0 {
			j.b = append(j.b, ',')
		}
		j.b = appendJSONString(j.b, v)
	}
	j.b = append(j.b, ']')
	j.comma = true
}

// line returns the document with the trailing newline of OPT_APPEND_NEWLINE.
func (j *jsonWriter) line() []byte {
	return append(j.b, '\n')
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s like orjson: only '"', '\\' and control
// characters are escaped, everything else (including '<', '&' and U+2028)
// is copied verbatim.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			b = append(b, '\\', '"')
		case c == '\\':
			b = append(b, '\\', '\\')
		case c >= 0x20:
			b = append(b, c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\f':
			b = append(b, '\\', 'f')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
	}
	return append(b, '"')
}

// pyFloat formats f like Python's repr(float): the shortest string that
// round-trips, always with a decimal point or an exponent, so that an
// integral value prints as "1656958539.0" and never as an int. Exponent
// notation starts where repr switches to it (exponent < -4 or >= 16).
func pyFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64)
	exp, _ := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	if exp < -4 || exp >= 16 {
		return e
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.Contains(s, ".") {
		s += ".0"
	}
	return s
}

// pyTime returns t as Python's time.time() would: nanoseconds converted to
// a double and divided by 1e9 (CPython's _PyTime_AsSecondsDouble).
func pyTime(t time.Time) float64 {
	ns := t.UnixNano()
	if ns%1e9 == 0 {
		return float64(ns / 1e9)
	}
	return float64(ns) / 1e9
}

// pyTimestamp is Zulip's datetime_to_timestamp, int(dt.timestamp()) for a
// microsecond datetime: a correctly rounded division of the microseconds by
// 10⁶, truncated toward zero.
func pyTimestamp(t time.Time) int64 {
	us := t.Unix()*1e6 + int64(t.Nanosecond()/1e3)
	var f float64
	if us > -(1<<53) && us < 1<<53 {
		f = float64(us) / 1e6
	} else {
		f, _ = big.NewRat(us, 1e6).Float64()
	}
	return int64(f)
}
