package caddymodule

import (
	"bytes"
	"encoding/json"
	"slices"
)

// ignoredKey opens the last key Zulip writes in a 2xx answer when a request
// carried parameters it does not know.
var ignoredKey = []byte(`,"ignored_parameters_unsupported":[`)

// dropIgnored takes name out of the ignored_parameters_unsupported list at
// the end of a Zulip answer, dropping the key when the list becomes empty,
// and leaves every other byte as the server wrote it. ok is false when the
// answer has no such list naming name.
func dropIgnored(body []byte, name string) (out []byte, ok bool) {
	i := bytes.LastIndex(body, ignoredKey)
	if i < 0 {
		return nil, false
	}
	listStart := i + len(ignoredKey) - 1
	end := bytes.IndexByte(body[listStart:], ']')
	if end < 0 {
		return nil, false
	}
	listEnd := listStart + end + 1
	var names []string
	if err := json.Unmarshal(body[listStart:listEnd], &names); err != nil || !slices.Contains(names, name) {
		return nil, false
	}
	names = slices.DeleteFunc(names, func(n string) bool { return n == name })
	out = append(out, body[:i]...)
	if len(names) > 0 {
		out = append(out, ignoredKey[:len(ignoredKey)-1]...)
		out = appendStrings(out, names)
	}
	return append(out, body[listEnd:]...), true
}

// appendStrings writes a JSON list of parameter names as Zulip does:
// compact, no HTML escaping.
func appendStrings(dst []byte, names []string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(names) // strings always encode
	return append(dst, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}
