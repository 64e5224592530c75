package presence

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Decoded is a 2xx modern answer from upstream, decoded; Envelope is the
// other direction: the fields of an answer the handler renders.
type Decoded struct {
	// Rows are the presences in the order upstream sent them.
	Rows []Row
	// ServerTimestamp is server_timestamp.
	ServerTimestamp float64
	// HasLastUpdateID reports whether presence_last_update_id was present;
	// servers before Zulip 9.0 (feature level 263) omit it.
	HasLastUpdateID bool
	// LastUpdateID is presence_last_update_id when HasLastUpdateID is set.
	LastUpdateID int64
	// Ignored is ignored_parameters_unsupported, nil when absent.
	Ignored []string
}

// DecodeModern decodes an upstream 2xx answer in the modern format. It fails
// unless result is "success", msg is empty, presences and server_timestamp
// are present, every presence key is a decimal user id and every value holds
// exactly the integers active_timestamp and idle_timestamp (so a legacy
// answer from an old server fails), and there is no key this package could
// not reproduce. presence_last_update_id and ignored_parameters_unsupported
// are optional.
func DecodeModern(body []byte) (Decoded, error) {
	d := decoder{b: body}
	var r Decoded
	if err := d.response(&r); err != nil {
		return Decoded{}, err
	}
	return r, nil
}

// decodeError says where and why an upstream answer is not one
// DecodeModern accepts.
type decodeError struct {
	offset int
	reason string
}

func (e *decodeError) Error() string {
	return "presence: upstream answer at byte " + strconv.Itoa(e.offset) + ": " + e.reason
}

// The top-level keys of a modern answer, as bits to catch duplicates and
// missing keys.
const (
	keyResult uint8 = 1 << iota
	keyMsg
	keyPresences
	keyServerTimestamp
	keyLastUpdateID
	keyIgnored

	keysRequired = keyResult | keyMsg | keyPresences | keyServerTimestamp
)

func topKey(key []byte) uint8 {
	switch string(key) {
	case "result":
		return keyResult
	case "msg":
		return keyMsg
	case "presences":
		return keyPresences
	case "server_timestamp":
		return keyServerTimestamp
	case "presence_last_update_id":
		return keyLastUpdateID
	case "ignored_parameters_unsupported":
		return keyIgnored
	}
	return 0
}

// decoder is a strict JSON scanner over one answer body: it reads only the
// shapes a modern answer has, and rejects the rest.
type decoder struct {
	b []byte
	i int
}

func (d *decoder) fail(reason string) error {
	return &decodeError{offset: d.i, reason: reason}
}

func (d *decoder) response(r *Decoded) error {
	var seen uint8
	err := d.object(func(key []byte) error {
		k := topKey(key)
		switch {
		case k == 0:
			return d.fail("unexpected key " + strconv.Quote(string(key)))
		case seen&k != 0:
			return d.fail("duplicate key " + strconv.Quote(string(key)))
		}
		seen |= k
		return d.topValue(k, r)
	})
	if err != nil {
		return err
	}
	d.skipSpace()
	if d.i != len(d.b) {
		return d.fail("data after the answer")
	}
	if seen&keysRequired != keysRequired {
		return d.fail("missing result, msg, presences or server_timestamp")
	}
	return nil
}

func (d *decoder) topValue(k uint8, r *Decoded) error {
	var err error
	switch k {
	case keyResult:
		var s []byte
		if s, err = d.str(); err == nil && string(s) != "success" {
			err = d.fail("result is not success")
		}
	case keyMsg:
		var s []byte
		if s, err = d.str(); err == nil && len(s) != 0 {
			err = d.fail("msg is not empty")
		}
	case keyPresences:
		err = d.presences(r)
	case keyServerTimestamp:
		r.ServerTimestamp, err = d.float()
	case keyLastUpdateID:
		r.LastUpdateID, err = d.int()
		r.HasLastUpdateID = true
	case keyIgnored:
		r.Ignored, err = d.stringArray()
	}
	return err
}

func (d *decoder) presences(r *Decoded) error {
	// Every row opens one object after the one of presences itself: this
	// sizes Rows exactly unless strings hold braces, in which case the
	// shortest possible row bounds it.
	rest := d.b[d.i:]
	r.Rows = make([]Row, 0, min(max(0, bytes.Count(rest, []byte{'{'})-1), len(rest)/len(shortestRow)))
	return d.object(func(key []byte) error {
		id, ok := parseUserID(key)
		if !ok {
			return d.fail("presence key " + strconv.Quote(string(key)) + " is not a user id")
		}
		p, err := d.presence()
		if err != nil {
			return err
		}
		r.Rows = append(r.Rows, Row{UserID: id, Presence: p})
		return nil
	})
}

func (d *decoder) presence() (Presence, error) {
	if p, ok := d.compactPresence(); ok {
		return p, nil
	}
	const (
		active uint8 = 1 << iota
		idle
	)
	var p Presence
	var seen uint8
	err := d.object(func(key []byte) error {
		var k uint8
		switch string(key) {
		case "active_timestamp":
			k = active
		case "idle_timestamp":
			k = idle
		default:
			return d.fail("unexpected presence key " + strconv.Quote(string(key)))
		}
		if seen&k != 0 {
			return d.fail("duplicate presence key " + strconv.Quote(string(key)))
		}
		seen |= k
		n, err := d.int()
		if k == active {
			p.Active = n
		} else {
			p.Idle = n
		}
		return err
	})
	if err == nil && seen != active|idle {
		err = d.fail("presence lacks active_timestamp or idle_timestamp")
	}
	return p, err
}

// shortestRow is the shortest text of a presences entry.
const shortestRow = `"0":{"active_timestamp":0,"idle_timestamp":0}`

var (
	activeHead = []byte(`{"active_timestamp":`)
	idleHead   = []byte(`,"idle_timestamp":`)
)

// compactPresence reads a presence written exactly as orjson writes it, the
// fast path for every real answer. Otherwise it leaves d where it was.
func (d *decoder) compactPresence() (Presence, bool) {
	start := d.i
	d.skipSpace()
	var p Presence
	ok := d.literal(activeHead) && d.intInto(&p.Active) &&
		d.literal(idleHead) && d.intInto(&p.Idle) && d.literal([]byte{'}'})
	if !ok {
		d.i = start
	}
	return p, ok
}

// literal consumes lit if the input continues with it.
func (d *decoder) literal(lit []byte) bool {
	if !bytes.HasPrefix(d.b[d.i:], lit) {
		return false
	}
	d.i += len(lit)
	return true
}

func (d *decoder) intInto(n *int64) bool {
	var err error
	*n, err = d.int()
	return err == nil
}

// parseUserID accepts what str(user_id) produces: decimal digits without a
// sign or leading zeros.
func parseUserID(key []byte) (int64, bool) {
	if len(key) == 0 || len(key) > 1 && key[0] == '0' {
		return 0, false
	}
	for _, c := range key {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	return parseDigits(key)
}

// parseDigits converts a run of decimal digits, failing on int64 overflow.
func parseDigits(b []byte) (int64, bool) {
	var n uint64
	for _, c := range b {
		if n > (1<<63-1)/10 {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if n > 1<<63-1 {
		return 0, false
	}
	return int64(n), true
}

// object reads a JSON object, calling field with each key (owned by the
// call) while d is positioned at the value, which field must consume.
func (d *decoder) object(field func(key []byte) error) error {
	if !d.consume('{') {
		return d.fail("expected an object")
	}
	if d.consume('}') {
		return nil
	}
	for {
		key, err := d.str()
		if err != nil {
			return err
		}
		if !d.consume(':') {
			return d.fail("expected ':'")
		}
		if err := field(key); err != nil {
			return err
		}
		if d.consume(',') {
			continue
		}
		if d.consume('}') {
			return nil
		}
		return d.fail("expected ',' or '}'")
	}
}

// stringArray reads an array of strings.
func (d *decoder) stringArray() ([]string, error) {
	if !d.consume('[') {
		return nil, d.fail("expected an array")
	}
	out := []string{}
	if d.consume(']') {
		return out, nil
	}
	for {
		s, err := d.str()
		if err != nil {
			return nil, err
		}
		out = append(out, string(s))
		if d.consume(',') {
			continue
		}
		if d.consume(']') {
			return out, nil
		}
		return nil, d.fail("expected ',' or ']'")
	}
}

func (d *decoder) skipSpace() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// consume skips whitespace and then c, if c is next.
func (d *decoder) consume(c byte) bool {
	d.skipSpace()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

// int reads a JSON integer that fits an int64.
func (d *decoder) int() (int64, error) {
	d.skipSpace()
	start := d.i
	neg := d.i < len(d.b) && d.b[d.i] == '-'
	if neg {
		d.i++
	}
	digits := d.i
	for d.i < len(d.b) && '0' <= d.b[d.i] && d.b[d.i] <= '9' {
		d.i++
	}
	switch {
	case d.i == digits || d.i-digits > 1 && d.b[digits] == '0':
		d.i = start
		return 0, d.fail("expected an integer")
	case d.i < len(d.b) && (d.b[d.i] == '.' || d.b[d.i] == 'e' || d.b[d.i] == 'E'):
		d.i = start
		return 0, d.fail("number is not an integer")
	}
	if neg {
		n, err := strconv.ParseInt(string(d.b[start:d.i]), 10, 64)
		if err != nil {
			d.i = start
			return 0, d.fail("integer out of range")
		}
		return n, nil
	}
	n, ok := parseDigits(d.b[digits:d.i])
	if !ok {
		d.i = start
		return 0, d.fail("integer out of range")
	}
	return n, nil
}

// float reads any JSON number.
func (d *decoder) float() (float64, error) {
	d.skipSpace()
	end := d.i
	for end < len(d.b) && strings.IndexByte("+-.0123456789eE", d.b[end]) >= 0 {
		end++
	}
	span := d.b[d.i:end]
	if _, ok := scanNumber(string(span)); !ok {
		return 0, d.fail("expected a number")
	}
	f, err := strconv.ParseFloat(string(span), 64)
	if err != nil {
		return 0, d.fail("number out of range")
	}
	d.i = end
	return f, nil
}

// str reads a JSON string. Without escapes the result aliases the body.
func (d *decoder) str() ([]byte, error) {
	if !d.consume('"') {
		return nil, d.fail("expected a string")
	}
	start := d.i
	ascii := true
	for d.i < len(d.b) {
		switch c := d.b[d.i]; {
		case c == '"':
			s := d.b[start:d.i]
			d.i++
			if !ascii && !utf8.Valid(s) {
				return nil, d.fail("invalid UTF-8 in string")
			}
			return s, nil
		case c >= utf8.RuneSelf:
			ascii = false
		case c == '\\':
			return d.unescape(append([]byte(nil), d.b[start:d.i]...))
		case c < ' ':
			return nil, d.fail("control character in string")
		}
		d.i++
	}
	return nil, d.fail("unterminated string")
}

// unescape continues a string at its first backslash, appending to out.
func (d *decoder) unescape(out []byte) ([]byte, error) {
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			if !utf8.Valid(out) {
				return nil, d.fail("invalid UTF-8 in string")
			}
			return out, nil
		case c < ' ':
			return nil, d.fail("control character in string")
		case c != '\\':
			out = append(out, c)
			d.i++
			continue
		}
		d.i++
		if d.i >= len(d.b) {
			break
		}
		var ok bool
		if out, ok = d.escape(out); !ok {
			return nil, d.fail("invalid escape in string")
		}
	}
	return nil, d.fail("unterminated string")
}

// escape decodes the escape after a backslash at d.i.
func (d *decoder) escape(out []byte) ([]byte, bool) {
	c := d.b[d.i]
	d.i++
	switch c {
	case '"', '\\', '/':
		return append(out, c), true
	case 'b':
		return append(out, '\b'), true
	case 'f':
		return append(out, '\f'), true
	case 'n':
		return append(out, '\n'), true
	case 'r':
		return append(out, '\r'), true
	case 't':
		return append(out, '\t'), true
	case 'u':
		r, ok := d.hex4()
		if !ok {
			return out, false
		}
		if utf16.IsSurrogate(r) {
			// Only a full pair is a character; Python refuses halves.
			if d.i+1 >= len(d.b) || d.b[d.i] != '\\' || d.b[d.i+1] != 'u' {
				return out, false
			}
			d.i += 2
			r2, ok := d.hex4()
			if r = utf16.DecodeRune(r, r2); !ok || r == utf8.RuneError {
				return out, false
			}
		}
		return utf8.AppendRune(out, r), true
	}
	return out, false
}

func (d *decoder) hex4() (rune, bool) {
	if d.i+4 > len(d.b) {
		return 0, false
	}
	var r rune
	for _, c := range d.b[d.i : d.i+4] {
		var v byte
		switch {
		case '0' <= c && c <= '9':
			v = c - '0'
		case 'a' <= c && c <= 'f':
			v = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	d.i += 4
	return r, true
}
