package zuliptest

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
)

// Answer is one HTTP answer to a presence request.
type Answer struct {
	Status int
	// Header holds the answer's headers; Compare reads those of
	// comparedHeaders.
	Header http.Header
	Body   []byte
}

// comparedHeaders are the headers Compare requires to be identical: what
// a client makes of the body, whether anything between it and the server
// may cache the answer, the language and Vary that Django's middleware
// sets per request, and the security and CORS headers of Zulip's nginx.
// The others (Date, Expires, the rate-limit counts, framing) belong to
// one exchange.
var comparedHeaders = []string{"Content-Type", "Cache-Control", "Content-Language", "Vary", "X-Frame-Options", "Strict-Transport-Security", "X-Content-Type-Options", "Access-Control-Allow-Origin", "Access-Control-Allow-Headers", "Access-Control-Allow-Methods"}

// Compare reports how an answer given through a proxy differs from the
// answer the server gave the same request directly, beyond what the
// proxy's fidelity contract allows: the order of entries inside
// "presences", and, when converted is true (a full poll the proxy served
// from incremental fetches), the value of presence_last_update_id, which
// must still be an integer. Everything else must be identical: status,
// the headers of comparedHeaders, envelope keys and their
// order, every entry byte for byte, server_timestamp,
// ignored_parameters_unsupported, error bodies, and Zulip's trailing
// newline.
//
// It scans the compact JSON Zulip writes without decoding it, so that
// benchmarks can compare every answer of a large realm.
func Compare(direct, proxied Answer, converted bool) error {
	if direct.Status != proxied.Status {
		return fmt.Errorf("status %d, want %d", proxied.Status, direct.Status)
	}
	for _, k := range comparedHeaders {
		if d, p := direct.Header.Values(k), proxied.Header.Values(k); !slices.Equal(d, p) {
			return fmt.Errorf("%s %q, want %q", k, p, d)
		}
	}
	if bytes.Equal(direct.Body, proxied.Body) {
		return nil
	}
	if direct.Status != http.StatusOK {
		return errors.New("error body differs")
	}
	if !bytes.HasSuffix(proxied.Body, []byte("}\n")) {
		return errors.New("no trailing newline after the object")
	}
	dk, err := members(direct.Body)
	if err != nil {
		return fmt.Errorf("direct answer: %v", err)
	}
	pk, err := members(proxied.Body)
	if err != nil {
		return fmt.Errorf("proxied answer: %v", err)
	}
	if len(dk) != len(pk) {
		return fmt.Errorf("envelope keys %s, want %s", keyList(pk), keyList(dk))
	}
	for i := range dk {
		if !bytes.Equal(dk[i].key, pk[i].key) {
			return fmt.Errorf("envelope keys %s, want %s", keyList(pk), keyList(dk))
		}
		if err := compareMember(dk[i], pk[i], converted); err != nil {
			return err
		}
	}
	return nil
}

func compareMember(d, p member, converted bool) error {
	switch string(d.key) {
	case `"presences"`:
		return comparePresences(d.value, p.value)
	case `"presence_last_update_id"`:
		if _, err := strconv.ParseInt(string(p.value), 10, 64); err != nil {
			return fmt.Errorf("presence_last_update_id %s is not an integer", p.value)
		}
		if converted || bytes.Equal(d.value, p.value) {
			return nil
		}
	default:
		if bytes.Equal(d.value, p.value) {
			return nil
		}
	}
	return fmt.Errorf("%s = %s, want %s", d.key, p.value, d.value)
}

func comparePresences(d, p []byte) error {
	de, err := members(d)
	if err != nil {
		return err
	}
	pe, err := members(p)
	if err != nil {
		return err
	}
	byKey := func(a, b member) int { return bytes.Compare(a.key, b.key) }
	slices.SortFunc(de, byKey)
	slices.SortFunc(pe, byKey)
	i, j := 0, 0
	for i < len(de) || j < len(pe) {
		switch {
		case j == len(pe) || (i < len(de) && bytes.Compare(de[i].key, pe[j].key) < 0):
			return fmt.Errorf("presences lacks %s: %s", de[i].key, de[i].value)
		case i == len(de) || bytes.Compare(de[i].key, pe[j].key) > 0:
			return fmt.Errorf("presences has extra %s: %s", pe[j].key, pe[j].value)
		case !bytes.Equal(de[i].value, pe[j].value):
			return fmt.Errorf("presences[%s] = %s, want %s", de[i].key, pe[j].value, de[i].value)
		}
		i++
		j++
	}
	return nil
}

// Member is one key, with its quotes, and its raw value in a JSON object.
type Member struct {
	Key, Value []byte
}

// SplitObject splits a compact JSON object (Zulip's answers have no
// insignificant whitespace) into its members, in order.
func SplitObject(obj []byte) ([]Member, error) {
	ms, err := members(obj)
	if err != nil {
		return nil, err
	}
	out := make([]Member, len(ms))
	for i, m := range ms {
		out[i] = Member{Key: m.key, Value: m.value}
	}
	return out, nil
}

// member is one key and its raw value in a JSON object.
type member struct {
	key, value []byte
}

func keyList(ms []member) string {
	var b bytes.Buffer
	for i, m := range ms {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(m.key)
	}
	return b.String()
}

// members splits a compact JSON object into its members, in order.
func members(obj []byte) ([]member, error) {
	obj = bytes.TrimRight(obj, "\n")
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return nil, errors.New("not a JSON object")
	}
	var out []member
	for i := 1; i < len(obj)-1; {
		keyEnd, err := skipString(obj, i)
		if err != nil {
			return nil, err
		}
		if keyEnd >= len(obj) || obj[keyEnd] != ':' {
			return nil, fmt.Errorf("no colon after key at %d", i)
		}
		valEnd, err := skipValue(obj, keyEnd+1)
		if err != nil {
			return nil, err
		}
		out = append(out, member{obj[i:keyEnd], obj[keyEnd+1 : valEnd]})
		i = valEnd
		if i < len(obj)-1 {
			if obj[i] != ',' {
				return nil, fmt.Errorf("expected a comma at %d", i)
			}
			i++
		}
	}
	return out, nil
}

// skipString returns the index just after the JSON string starting at i.
func skipString(b []byte, i int) (int, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, fmt.Errorf("expected a string at %d", i)
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errors.New("unterminated string")
}

// skipValue returns the index just after the JSON value starting at i.
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errors.New("missing value")
	}
	if b[i] == '"' {
		return skipString(b, i)
	}
	if b[i] != '{' && b[i] != '[' {
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
			j++
		}
		if j == i {
			return 0, fmt.Errorf("empty value at %d", i)
		}
		return j, nil
	}
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			end, err := skipString(b, j)
			if err != nil {
				return 0, err
			}
			j = end - 1
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return j + 1, nil
			}
		}
	}
	return 0, errors.New("unbalanced value")
}
