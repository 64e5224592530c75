package presence

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/textproto"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
	"unsafe"
)

// Error is a parameter error: Zulip rejects the request with a 400 whose
// "msg" is Msg. The proxy never answers one itself (it passes the request
// through for the server to answer), so Msg serves to tell which check
// failed first.
type Error struct {
	Msg string
}

// Parsed is the result of Parse.
type Parsed struct {
	// Request holds the parameters as Zulip reads them. When Err is set it
	// may be partial: parsing stops at the first failing check, as Zulip's
	// does.
	Request Request
	// Err is the error Zulip would answer with (the first failing check in
	// Zulip's order), or nil.
	Err *Error
	// Unusual reports anything beyond what Zulip documents but the plain
	// extra parameters of Extras: a duplicate key, a "method" field (or
	// another name Zulip's middleware reads), more extras than a client
	// sends, a content type Zulip does not parse for POST, bad encoding,
	// or values whose reading by Zulip is uncertain. A proxy must pass an
	// unusual request through untouched, whatever Err says.
	Unusual bool
	// Extras are the parameters outside the documented six, each sent
	// once, in the order they came (body first). Zulip's presence view
	// does not process them: it lists them in
	// ignored_parameters_unsupported (see IgnoredNames), except client,
	// which its middleware reads. nil when there are none.
	Extras []Extra
}

// Extra is one parameter a request carried that the presence view does not
// take, kept so that a request made in its stead can carry it too.
type Extra struct {
	// Name is the parameter's name as Zulip reads it.
	Name string
	// Field is the parameter as an application/x-www-form-urlencoded
	// field: the bytes as they came for a urlencoded body or query
	// string, an encoding of the name and value for a multipart field.
	Field string
	// Query reports that it came in the query string, not the body.
	Query bool
}

// maxExtras bounds the extras a request may carry and still be usual: a
// script adds one or two, and each is carried on a fetch and looked up in
// the server's answer.
const maxExtras = 8

// maxExtraName bounds an extra's name, for the same reason.
const maxExtraName = 64

// middlewareNames are parameters that code other than the presence view
// reads, so that their effect cannot be known from the view's answer:
// rest_dispatch's method override, the API key of webhook-style
// authentication, Django's CSRF form field.
var middlewareNames = [...]string{"method", "api_key", "csrfmiddlewaretoken"}

// IgnoredNames returns the names Zulip lists in ignored_parameters_unsupported
// for extras, as it lists them: sorted (Python's sorted, code point order,
// which is UTF-8 byte order), without client, which Zulip's middleware
// (parse_client) reads on every request. nil when there are none.
func IgnoredNames(extras []Extra) []string {
	var names []string
	for _, e := range extras {
		if e.Name != "client" {
			names = append(names, e.Name)
		}
	}
	sort.Strings(names)
	return names
}

// params lists the documented parameters in the order Zulip checks them:
// its view signature, which is alphabetical.
var params = [...]struct {
	name string
	bit  Param
}{
	{"history_limit_days", ParamHistoryLimitDays},
	{"last_update_id", ParamLastUpdateID},
	{"new_user_input", ParamNewUserInput},
	{"ping_only", ParamPingOnly},
	{"slim_presence", ParamSlimPresence},
	{"status", ParamStatus},
}

const (
	// maxFields mirrors Django's DATA_UPLOAD_MAX_NUMBER_FIELDS: beyond it
	// Django rejects the request with its own 400.
	maxFields = 1000
	// maxParts bounds the multipart work: a presence request has at most
	// six fields, so anything far beyond that is not one we will answer.
	maxParts = 64
	// maxBody is Django's default DATA_UPLOAD_MAX_MEMORY_SIZE: beyond it
	// Django may refuse the body, and no presence request comes close.
	maxBody = 2_621_440

	formType = "application/x-www-form-urlencoded"
)

// Parse reads a POST /users/me/presence request as Zulip does: the body form
// (for application/x-www-form-urlencoded and multipart/form-data only) wins
// over the query string, Json parameters are decoded strictly, and checks run
// in Zulip's order so the first failure is the one Zulip reports. It never
// panics and its work is linear in the input.
func Parse(contentType string, body []byte, rawQuery string) Parsed {
	var p Parsed
	bodyForm, queryForm := form{extras: &p.Extras}, form{extras: &p.Extras, query: true}
	p.Unusual = bodyForm.parseBody(contentType, body)
	if queryForm.parseURLEncoded(rawQuery) {
		p.Unusual = true
	}
	p.Err = p.Request.fill(&bodyForm, &queryForm, &p.Unusual)
	return p
}

// form holds the documented parameters found in one source (body or query),
// and adds the others to the request's extras.
type form struct {
	sent   Param
	val    [len(params)]string
	extras *[]Extra
	query  bool
}

// set records a field and reports whether it makes the request unusual.
// raw is the field as it came in a urlencoded source, "" for a multipart
// one.
func (f *form) set(key, value, raw string) bool {
	i := paramIndex(key)
	if i < 0 {
		return f.extra(key, value, raw)
	}
	dup := f.sent&params[i].bit != 0
	f.sent |= params[i].bit
	f.val[i] = value // Django's QueryDict returns the last value
	return dup
}

// extra records a parameter the view does not take, and reports whether it
// makes the request unusual: Zulip lists it in ignored_parameters_unsupported
// and otherwise ignores it, unless its name is one that other code reads.
// Parse keeps no substring of its input, so the strings are copied.
func (f *form) extra(key, value, raw string) bool {
	if key == "" || len(key) > maxExtraName || len(*f.extras) >= maxExtras {
		return true
	}
	for _, n := range middlewareNames {
		if key == n {
			return true
		}
	}
	for _, e := range *f.extras {
		if e.Name == key {
			return true // a duplicate, in one source or across both
		}
	}
	if raw == "" {
		raw = url.QueryEscape(key) + "=" + url.QueryEscape(value)
	} else {
		raw = strings.Clone(raw)
	}
	*f.extras = append(*f.extras, Extra{Name: strings.Clone(key), Field: raw, Query: f.query})
	return false
}

func paramIndex(key string) int {
	for i := range params {
		if params[i].name == key {
			return i
		}
	}
	return -1
}

// parseBody reads the body as Django would populate request.POST.
func (f *form) parseBody(contentType string, body []byte) (unusual bool) {
	if len(body) > maxBody {
		return true
	}
	if contentType == "" {
		return len(body) > 0
	}
	if isPlainForm(contentType) {
		return f.parseURLEncoded(bytesToString(body))
	}
	mediaType, ps, err := mime.ParseMediaType(contentType)
	if err != nil {
		return true
	}
	switch mediaType {
	case formType:
		unusual = !plainParams(ps, "")
		return f.parseURLEncoded(bytesToString(body)) || unusual
	case "multipart/form-data":
		boundary, ok := ps["boundary"]
		if !ok || !validBoundary(boundary) {
			// Django raises MultiPartParserError before reading anything.
			return true
		}
		unusual = !plainParams(ps, "boundary")
		if len(body) == 0 {
			return unusual
		}
		return f.parseMultipart(body, boundary) || unusual
	}
	// Django leaves request.POST empty for any other type; a non-empty body
	// suggests the client meant something Zulip will not see.
	return len(body) > 0
}

// isPlainForm recognises the urlencoded content types clients send
// (optionally with charset=utf-8) without mime.ParseMediaType's allocations.
func isPlainForm(contentType string) bool {
	mediaType, params, _ := strings.Cut(contentType, ";")
	params = strings.TrimSpace(params)
	return strings.EqualFold(strings.TrimSpace(mediaType), formType) &&
		(params == "" || strings.EqualFold(params, "charset=utf-8"))
}

// bytesToString views b as a string without copying. Parse keeps no
// substring of it: fill copies the one string value it keeps, the status.
func bytesToString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// plainParams reports whether media type parameters ps hold nothing but
// extra and a UTF-8 charset: Django decodes with any charset it is given,
// which would change how it reads the bytes.
func plainParams(ps map[string]string, extra string) bool {
	for k, v := range ps {
		switch {
		case k == extra:
		case k == "charset" && (strings.EqualFold(v, "utf-8") || strings.EqualFold(v, "utf8")):
		default:
			return false
		}
	}
	return true
}

// validBoundary accepts RFC 2046 sized, printable boundaries, a subset of
// what both Django and mime/multipart read the same way.
func validBoundary(b string) bool {
	if len(b) == 0 || len(b) > 70 || b[len(b)-1] == ' ' {
		return false
	}
	for i := 0; i < len(b); i++ {
		if b[i] < ' ' || b[i] > '~' {
			return false
		}
	}
	return true
}

// parseURLEncoded splits s like Python's parse_qsl with
// keep_blank_values=True, which Django uses for both the query string and
// urlencoded bodies, and reports whether s is unusual.
func (f *form) parseURLEncoded(s string) (unusual bool) {
	if strings.Count(s, "&") >= maxFields {
		return true
	}
	// Django splits on '&' only and keeps ';' literal, where Go's
	// url.ParseQuery rejects it; invalid UTF-8 makes Django fall back to
	// Latin-1. Neither is something a client of ours sends.
	unusual = strings.IndexByte(s, ';') >= 0 || !utf8.ValidString(s)
	for s != "" {
		var field string
		field, s, _ = strings.Cut(s, "&")
		if field == "" {
			continue
		}
		k, v, _ := strings.Cut(field, "=")
		key, okKey := unescape(k)
		value, okValue := unescape(v)
		if f.set(key, value, field) || !okKey || !okValue {
			unusual = true
		}
	}
	return unusual
}

// unescape decodes a form component; ok is false where Python's unquote
// would read it differently (invalid escapes, invalid UTF-8).
func unescape(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, true
	}
	u, err := url.QueryUnescape(s)
	if err != nil {
		return s, false
	}
	return u, utf8.ValidString(u)
}

// parseMultipart reads form fields from a multipart body. Anything Django
// might read differently from mime/multipart (files, transfer encodings,
// odd headers, truncated bodies) makes the request unusual.
func (f *form) parseMultipart(body []byte, boundary string) (unusual bool) {
	// Django reads a preamble as a part, and needs CRLF where
	// mime/multipart also takes a bare LF.
	unusual = !bytes.HasPrefix(body, []byte("--"+boundary)) ||
		bytes.Count(body, []byte("\n")) != bytes.Count(body, []byte("\r\n"))
	r := multipart.NewReader(bytes.NewReader(body), boundary)
	for range maxParts {
		// NextRawPart, because Django does not undo quoted-printable.
		part, err := r.NextRawPart()
		if err == io.EOF {
			return unusual
		}
		if err != nil {
			return true
		}
		name, ok := partName(part.Header)
		value, err := io.ReadAll(part)
		if err != nil {
			return true
		}
		if !ok || f.set(name, string(value), "") || !utf8.Valid(value) {
			unusual = true
		}
	}
	return true
}

// partName returns the field name of a plain form field part; ok is false
// for anything else.
func partName(h textproto.MIMEHeader) (name string, ok bool) {
	for k, vs := range h {
		if len(vs) != 1 || k != "Content-Disposition" && k != "Content-Type" {
			return "", false
		}
	}
	if ct := h.Get("Content-Type"); ct != "" {
		mediaType, ps, err := mime.ParseMediaType(ct)
		if err != nil || mediaType != "text/plain" || !plainParams(ps, "") {
			return "", false
		}
	}
	cd := h.Get("Content-Disposition")
	// RFC 2231 and backslash escapes are where header parsers disagree.
	if strings.ContainsAny(cd, "*\\") {
		return "", false
	}
	disposition, ps, err := mime.ParseMediaType(cd)
	if err != nil || disposition != "form-data" || len(ps) != 1 {
		return "", false
	}
	name, ok = ps["name"]
	// Django strips the name; a file part (filename) fails len(ps) above.
	if !ok || name != strings.TrimSpace(name) || !utf8.ValidString(name) {
		return "", false
	}
	return name, true
}

// lookup returns the value Zulip reads for params[i]: request.POST first,
// then request.GET.
func lookup(bodyForm, queryForm *form, i int) (string, bool) {
	switch {
	case bodyForm.sent&params[i].bit != 0:
		return bodyForm.val[i], true
	case queryForm.sent&params[i].bit != 0:
		return queryForm.val[i], true
	}
	return "", false
}

// fill checks the parameters in Zulip's order and stops at the first error.
func (r *Request) fill(bodyForm, queryForm *form, unusual *bool) *Error {
	for i, p := range params {
		v, ok := lookup(bodyForm, queryForm, i)
		if !ok {
			if p.bit == ParamStatus {
				return errMissingStatus
			}
			continue
		}
		r.Sent |= p.bit
		var err *Error
		switch p.bit {
		case ParamHistoryLimitDays:
			r.HistoryLimitDays, err = jsonInt(i, v, unusual)
		case ParamLastUpdateID:
			r.LastUpdateID, err = jsonInt(i, v, unusual)
		case ParamNewUserInput:
			r.NewUserInput, err = jsonBool(i, v, unusual)
		case ParamPingOnly:
			r.PingOnly, err = jsonBool(i, v, unusual)
		case ParamSlimPresence:
			r.SlimPresence, err = jsonBool(i, v, unusual)
		case ParamStatus:
			r.Status = internStatus(v)
		}
		if err != nil {
			return err
		}
	}
	// Zulip validates the status value only after parsing every parameter.
	if r.Status != "active" && r.Status != "idle" {
		return invalidStatus(r.Status)
	}
	return nil
}

// internStatus returns v as a string of its own, so that the Request does
// not pin the body, allocating only for values Zulip rejects.
func internStatus(v string) string {
	switch v {
	case "active":
		return "active"
	case "idle":
		return "idle"
	}
	return strings.Clone(v)
}

// jsonBool decodes a Json[bool] parameter strictly: only true and false.
func jsonBool(i int, v string, unusual *bool) (bool, *Error) {
	t := trimJSONSpace(v, unusual)
	switch t {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	if validJSON(t, unusual) {
		return false, errNotBoolean[i]
	}
	return false, errInvalidJSON[i]
}

// jsonInt decodes a Json[int] parameter strictly: JSON integers only.
func jsonInt(i int, v string, unusual *bool) (int64, *Error) {
	t := trimJSONSpace(v, unusual)
	if isInt, ok := scanNumber(t); ok && isInt {
		n, err := strconv.ParseInt(t, 10, 64)
		if err != nil || t == "-0" {
			// Python takes integers of any size, and -0 does not survive
			// re-encoding: leave both to Zulip.
			*unusual = true
		}
		return n, nil
	}
	if validJSON(t, unusual) {
		return 0, errNotInteger[i]
	}
	return 0, errInvalidJSON[i]
}

// trimJSONSpace strips the whitespace JSON allows around a value. Zulip
// accepts it, but re-encoding drops it, so it marks the request unusual.
func trimJSONSpace(v string, unusual *bool) string {
	t := strings.Trim(v, " \t\n\r")
	if len(t) != len(v) {
		*unusual = true
	}
	return t
}

// validJSON reports whether Zulip's JSON reader (pydantic's, which also
// takes NaN and Infinity) reads t as one value. Where JSON readers are known
// to differ (those literals, nesting depth, \u escapes, huge numbers) it sets
// unusual, since our reading could then be wrong.
func validJSON(t string, unusual *bool) bool {
	switch t {
	case "":
		return false
	case "true", "false", "null":
		return true
	case "NaN", "Infinity", "-Infinity":
		*unusual = true
		return true
	}
	switch t[0] {
	case '"':
		if strings.Contains(t, `\u`) {
			*unusual = true
		}
		return json.Valid([]byte(t))
	case '[', '{':
		*unusual = true
		return json.Valid([]byte(t))
	}
	isInt, ok := scanNumber(t)
	if ok && !isInt {
		if _, err := strconv.ParseFloat(t, 64); err != nil {
			*unusual = true
		}
	}
	return ok
}

// scanNumber reports whether t is exactly one JSON number and whether that
// number is written as an integer (no fraction, no exponent).
func scanNumber(t string) (isInt, ok bool) {
	i := 0
	if i < len(t) && t[i] == '-' {
		i++
	}
	switch {
	case i < len(t) && t[i] == '0':
		i++
	case i < len(t) && '1' <= t[i] && t[i] <= '9':
		i = skipDigits(t, i)
	default:
		return false, false
	}
	isInt = true
	if i < len(t) && t[i] == '.' {
		j := skipDigits(t, i+1)
		if j == i+1 {
			return false, false
		}
		i, isInt = j, false
	}
	if i < len(t) && (t[i] == 'e' || t[i] == 'E') {
		i++
		if i < len(t) && (t[i] == '+' || t[i] == '-') {
			i++
		}
		j := skipDigits(t, i)
		if j == i {
			return false, false
		}
		i, isInt = j, false
	}
	return isInt, i == len(t)
}

func skipDigits(t string, i int) int {
	for i < len(t) && '0' <= t[i] && t[i] <= '9' {
		i++
	}
	return i
}

// Zulip's fixed parameter errors, built once so rejecting costs nothing.
var (
	errMissingStatus = &Error{Msg: "Missing 'status' argument"}
	errInvalidJSON   = paramErrors("is not valid JSON")
	errNotBoolean    = paramErrors("is not a boolean")
	errNotInteger    = paramErrors("is not an integer")
)

func paramErrors(suffix string) (errs [len(params)]*Error) {
	for i, p := range params {
		errs[i] = &Error{Msg: p.name + " " + suffix}
	}
	return errs
}

func invalidStatus(status string) *Error {
	return &Error{Msg: "Invalid status: " + status}
}
