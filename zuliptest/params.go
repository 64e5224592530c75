package zuliptest

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"net/http"
	"sort"
	"strings"
	"unicode/utf8"
)

// Limits Django applies while reading request data
// (DATA_UPLOAD_MAX_MEMORY_SIZE as Zulip sets it, DATA_UPLOAD_MAX_NUMBER_FIELDS).
const (
	maxBodyBytes = 25 << 20
	maxFields    = 1000
)

var errBadBody = errors.New("zuliptest: unreadable request body")

// form holds a request's variables the way Django sees them: request.POST
// (the body, for form encodings only) and request.GET (the query string).
type form struct {
	post map[string][]string
	get  map[string][]string
}

// lookup finds a variable like typed_endpoint does: request.POST first,
// then request.GET. A QueryDict lookup returns the last value of a key.
func (f *form) lookup(name string) (string, bool) {
	if vs := f.post[name]; len(vs) > 0 {
		return vs[len(vs)-1], true
	}
	if vs := f.get[name]; len(vs) > 0 {
		return vs[len(vs)-1], true
	}
	return "", false
}

// ignored lists the request variables that are not in processed, sorted,
// as typed_endpoint reports them in ignored_parameters_unsupported.
// client is never listed: the middleware's parse_client processes it on
// every request.
func (f *form) ignored(processed ...string) []string {
	seen := map[string]bool{"client": true}
	for _, p := range processed {
		seen[p] = true
	}
	var out []string
	for _, m := range []map[string][]string{f.post, f.get} {
		for k := range m {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	sort.Strings(out)
	return out
}

// readPost fills request.POST. Django parses a body only for a POST whose
// content type is a form encoding; anything else (JSON included) leaves
// request.POST empty.
func readPost(r *http.Request) (map[string][]string, error) {
	mediaType, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mediaType != "application/x-www-form-urlencoded" && mediaType != "multipart/form-data" {
		return nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil || len(body) > maxBodyBytes {
		return nil, errBadBody
	}
	if mediaType == "multipart/form-data" {
		return parseMultipart(body, params["boundary"])
	}
	return parseQuery(decodeLatin1Fallback(body))
}

// parseQuery is Django's QueryDict: urllib.parse.parse_qsl with
// keep_blank_values, '&' as the only separator, '+' as space and lenient
// percent-decoding.
func parseQuery(qs string) (map[string][]string, error) {
	if qs == "" {
		return nil, nil
	}
	if strings.Count(qs, "&")+1 > maxFields {
		return nil, errBadBody
	}
	m := map[string][]string{}
	for _, pair := range strings.Split(qs, "&") {
		if pair == "" {
			continue
		}
		name, value, _ := strings.Cut(pair, "=")
		name = pyUnquote(strings.ReplaceAll(name, "+", " "))
		m[name] = append(m[name], pyUnquote(strings.ReplaceAll(value, "+", " ")))
	}
	return m, nil
}

// decodeLatin1Fallback decodes a body as UTF-8, or as ISO-8859-1 when it is
// not valid UTF-8, like QueryDict does for misbehaving user agents.
func decodeLatin1Fallback(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	rs := make([]rune, len(b))
	for i, c := range b {
		rs[i] = rune(c)
	}
	return string(rs)
}

// pyUnquote is urllib.parse.unquote: %XX sequences in ASCII runs become
// bytes, decoded as UTF-8 with U+FFFD for invalid sequences; malformed
// escapes stay as they are and non-ASCII text is kept.
func pyUnquote(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var out strings.Builder
	var run []byte
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			out.WriteString(decodeReplace(run))
			run = run[:0]
			_, size := utf8.DecodeRuneInString(s[i:])
			out.WriteString(s[i : i+size])
			i += size
			continue
		}
		if c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			run = append(run, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 3
			continue
		}
		run = append(run, c)
		i++
	}
	out.WriteString(decodeReplace(run))
	return out.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// decodeReplace decodes UTF-8 the way Python's errors="replace" does: one
// U+FFFD per maximal ill-formed subpart.
func decodeReplace(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var out strings.Builder
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		if r != utf8.RuneError || size > 1 {
			out.WriteRune(r)
			b = b[size:]
			continue
		}
		out.WriteRune(utf8.RuneError)
		b = b[illFormedLen(b):]
	}
	return out.String()
}

// illFormedLen is the length of the maximal prefix of b that could start a
// well-formed UTF-8 sequence (at least 1), which Python replaces as a unit.
func illFormedLen(b []byte) int {
	lo, hi, n := byte(0x80), byte(0xBF), 0
	switch c := b[0]; {
	case 0xC2 <= c && c <= 0xDF:
		n = 1
	case c == 0xE0:
		lo, n = 0xA0, 2
	case 0xE1 <= c && c <= 0xEC, c == 0xEE, c == 0xEF:
		n = 2
	case c == 0xED:
		hi, n = 0x9F, 2
	case c == 0xF0:
		lo, n = 0x90, 3
	case 0xF1 <= c && c <= 0xF3:
		n = 3
	case c == 0xF4:
		hi, n = 0x8F, 3
	default:
		return 1
	}
	i := 1
	for ; i <= n && i < len(b); i++ {
		if b[i] < lo || b[i] > hi {
			break
		}
		lo, hi = 0x80, 0xBF
	}
	return i
}

// parseMultipart reads the fields of a multipart/form-data body like
// Django's MultiPartParser: parts with a filename are files (request.FILES)
// and not variables, base64 transfer encoding is undone, and text is
// decoded as UTF-8 with replacement.
func parseMultipart(body []byte, boundary string) (map[string][]string, error) {
	if len(body) == 0 {
		return nil, nil
	}
	if boundary == "" {
		return nil, errBadBody
	}
	mr := multipart.NewReader(bytes.NewReader(body), boundary)
	m := map[string][]string{}
	for n := 0; ; n++ {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			return m, nil
		}
		if err != nil || n >= maxFields {
			return nil, errBadBody
		}
		name, value, ok, err := readField(part)
		if err != nil {
			return nil, err
		}
		if ok {
			m[name] = append(m[name], value)
		}
	}
}

func readField(part *multipart.Part) (name, value string, ok bool, err error) {
	_, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
	if err != nil {
		return "", "", false, errBadBody
	}
	data, err := io.ReadAll(part)
	if err != nil {
		return "", "", false, errBadBody
	}
	if _, isFile := params["filename"]; isFile || params["name"] == "" {
		return "", "", false, nil
	}
	if strings.EqualFold(part.Header.Get("Content-Transfer-Encoding"), "base64") {
		if data, err = base64.StdEncoding.DecodeString(string(bytes.TrimSpace(data))); err != nil {
			return "", "", false, errBadBody
		}
	}
	return decodeReplace([]byte(params["name"])), decodeReplace(data), true, nil
}

// jsonKind is the JSON type of a parsed Json[...] parameter.
type jsonKind int

const (
	kindInvalid jsonKind = iota
	kindNull
	kindBool
	kindInt
	kindFloat
	kindString
	kindArray
	kindObject
)

// Limits of the JSON parser pydantic uses (jiter) as observed: nesting
// deeper than 200 and integer literals longer than Python's 4300-digit
// int conversion limit are invalid JSON.
const (
	maxJSONDepth     = 200
	maxJSONIntDigits = 4300
)

// jsonScanner validates one JSON document the way pydantic's Json type
// does: RFC 8259 plus the NaN, Infinity and -Infinity literals, with lone
// surrogate escapes rejected.
type jsonScanner struct {
	s     string
	i     int
	depth int
}

// classifyJSON reports the type of the JSON document s, and for booleans
// their value and for integers their literal text.
func classifyJSON(s string) (kind jsonKind, b bool, lit string) {
	sc := &jsonScanner{s: s}
	sc.space()
	start := sc.i
	kind = sc.value()
	lit = s[start:sc.i]
	sc.space()
	if kind == kindInvalid || sc.i != len(s) {
		return kindInvalid, false, ""
	}
	return kind, lit == "true", lit
}

func (sc *jsonScanner) space() {
	for sc.i < len(sc.s) && strings.IndexByte(" \t\n\r", sc.s[sc.i]) >= 0 {
		sc.i++
	}
}

func (sc *jsonScanner) literal(word string) bool {
	if strings.HasPrefix(sc.s[sc.i:], word) {
		sc.i += len(word)
		return true
	}
	return false
}

func (sc *jsonScanner) value() jsonKind {
	if sc.i >= len(sc.s) {
		return kindInvalid
	}
	switch c := sc.s[sc.i]; {
	case c == '{':
		return sc.container('}', kindObject)
	case c == '[':
		return sc.container(']', kindArray)
	case c == '"':
		if sc.str() {
			return kindString
		}
	case sc.literal("true"), sc.literal("false"):
		return kindBool
	case sc.literal("null"):
		return kindNull
	case sc.literal("NaN"), sc.literal("Infinity"), sc.literal("-Infinity"):
		return kindFloat
	case c == '-' || '0' <= c && c <= '9':
		return sc.number()
	}
	return kindInvalid
}

func (sc *jsonScanner) container(closer byte, kind jsonKind) jsonKind {
	if sc.depth++; sc.depth > maxJSONDepth {
		return kindInvalid
	}
	defer func() { sc.depth-- }()
	sc.i++
	sc.space()
	if sc.i < len(sc.s) && sc.s[sc.i] == closer {
		sc.i++
		return kind
	}
	for {
		if kind == kindObject && !sc.member() || kind == kindArray && sc.value() == kindInvalid {
			return kindInvalid
		}
		sc.space()
		if sc.i >= len(sc.s) {
			return kindInvalid
		}
		switch sc.s[sc.i] {
		case ',':
			sc.i++
			sc.space()
		case closer:
			sc.i++
			return kind
		default:
			return kindInvalid
		}
	}
}

func (sc *jsonScanner) member() bool {
	if sc.i >= len(sc.s) || sc.s[sc.i] != '"' || !sc.str() {
		return false
	}
	sc.space()
	if sc.i >= len(sc.s) || sc.s[sc.i] != ':' {
		return false
	}
	sc.i++
	sc.space()
	return sc.value() != kindInvalid
}

// str scans a string literal; sc.s[sc.i] is the opening quote.
func (sc *jsonScanner) str() bool {
	for sc.i++; sc.i < len(sc.s); sc.i++ {
		switch c := sc.s[sc.i]; {
		case c == '"':
			sc.i++
			return true
		case c < 0x20:
			return false
		case c == '\\':
			if !sc.escape() {
				return false
			}
		}
	}
	return false
}

// escape scans one escape sequence; sc.s[sc.i] is the backslash and it
// leaves sc.i on the escape's last byte.
func (sc *jsonScanner) escape() bool {
	if sc.i+1 >= len(sc.s) {
		return false
	}
	sc.i++
	if strings.IndexByte(`"\/bfnrt`, sc.s[sc.i]) >= 0 {
		return true
	}
	if sc.s[sc.i] != 'u' {
		return false
	}
	r, ok := sc.hex4(sc.i + 1)
	if !ok {
		return false
	}
	sc.i += 4
	switch {
	case 0xDC00 <= r && r <= 0xDFFF:
		return false
	case r < 0xD800 || r > 0xDBFF:
		return true
	}
	// A high surrogate must be followed by an escaped low surrogate.
	if !strings.HasPrefix(sc.s[sc.i+1:], `\u`) {
		return false
	}
	low, ok := sc.hex4(sc.i + 3)
	if !ok || low < 0xDC00 || low > 0xDFFF {
		return false
	}
	sc.i += 6
	return true
}

func (sc *jsonScanner) hex4(at int) (rune, bool) {
	if at+4 > len(sc.s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(sc.s[at : at+4]) {
		if !isHex(c) {
			return 0, false
		}
		r = r<<4 | rune(unhex(c))
	}
	return r, true
}

func (sc *jsonScanner) number() jsonKind {
	start := sc.i
	if sc.s[sc.i] == '-' {
		sc.i++
	}
	switch {
	case sc.i < len(sc.s) && sc.s[sc.i] == '0':
		sc.i++
	case sc.digits() == 0:
		return kindInvalid
	}
	kind := kindInt
	if sc.i < len(sc.s) && sc.s[sc.i] == '.' {
		sc.i++
		if sc.digits() == 0 {
			return kindInvalid
		}
		kind = kindFloat
	}
	if sc.i < len(sc.s) && (sc.s[sc.i] == 'e' || sc.s[sc.i] == 'E') {
		sc.i++
		if sc.i < len(sc.s) && (sc.s[sc.i] == '+' || sc.s[sc.i] == '-') {
			sc.i++
		}
		if sc.digits() == 0 {
			return kindInvalid
		}
		kind = kindFloat
	}
	if kind == kindInt && sc.i-start > maxJSONIntDigits {
		return kindInvalid
	}
	return kind
}

func (sc *jsonScanner) digits() int {
	n := 0
	for sc.i < len(sc.s) && '0' <= sc.s[sc.i] && sc.s[sc.i] <= '9' {
		sc.i++
		n++
	}
	return n
}

// jsonInt is a parsed Json[int] value. Python ints are unbounded, so the
// literal is kept for echoing and fits says whether it is an int64.
type jsonInt struct {
	v    int64
	text string
	fits bool
}

// serializable reports whether orjson could print the value, which it
// refuses for integers outside [-2⁶³, 2⁶⁴-1].
func (n jsonInt) serializable() bool {
	if n.fits {
		return true
	}
	b, _ := new(big.Int).SetString(n.text, 10)
	return b.Sign() > 0 && b.BitLen() <= 64
}

func (n jsonInt) sign() int {
	if n.fits {
		switch {
		case n.v > 0:
			return 1
		case n.v < 0:
			return -1
		}
		return 0
	}
	if strings.HasPrefix(n.text, "-") {
		return -1
	}
	return 1
}

// paramError is the typed_endpoint error for a parameter that failed
// pydantic validation.
func paramError(name, problem string) *apiError {
	return badRequest(name + " " + problem)
}

// parseJSONBool parses a Json[bool] parameter with pydantic's strict mode.
func parseJSONBool(name, raw string) (bool, *apiError) {
	kind, b, _ := classifyJSON(raw)
	switch kind {
	case kindInvalid:
		return false, paramError(name, "is not valid JSON")
	case kindBool:
		return b, nil
	}
	return false, paramError(name, "is not a boolean")
}

// parseJSONInt parses a Json[int] parameter with pydantic's strict mode.
// Optional ints (Json[int] | None) reject the literal null the same way,
// because the None branch only accepts a Python None, never a string.
func parseJSONInt(name, raw string) (jsonInt, *apiError) {
	kind, _, lit := classifyJSON(raw)
	switch kind {
	case kindInvalid:
		return jsonInt{}, paramError(name, "is not valid JSON")
	case kindInt:
		b, _ := new(big.Int).SetString(lit, 10)
		return jsonInt{v: clampInt64(b), text: b.String(), fits: b.IsInt64()}, nil
	}
	return jsonInt{}, paramError(name, "is not an integer")
}

func clampInt64(b *big.Int) int64 {
	switch {
	case b.IsInt64():
		return b.Int64()
	case b.Sign() > 0:
		return 1<<63 - 1
	}
	return -1 << 63
}

// optionalBool parses an optional Json[bool] parameter; absent means def.
func (f *form) optionalBool(name string, def bool) (bool, *apiError) {
	raw, ok := f.lookup(name)
	if !ok {
		return def, nil
	}
	return parseJSONBool(name, raw)
}

// optionalInt parses an optional Json[int] | None parameter; absent is nil.
func (f *form) optionalInt(name string) (*jsonInt, *apiError) {
	raw, ok := f.lookup(name)
	if !ok {
		return nil, nil
	}
	n, err := parseJSONInt(name, raw)
	if err != nil {
		return nil, err
	}
	return &n, nil
}
