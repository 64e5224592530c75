package presence

import (
	"bytes"
	"encoding/json"
	"slices"
)

// ignoredKey opens the last key Zulip writes in a 2xx answer when a request
// carried parameters it does not know.
var ignoredKey = []byte(`,"ignored_parameters_unsupported":[`)

// DropIgnored takes name out of the ignored_parameters_unsupported list at
// the end of a Zulip answer, dropping the key when the list becomes empty,
// and leaves every other byte as the server wrote it. ok is false when the
// answer has no such list naming name.
func DropIgnored(body []byte, name string) (out []byte, ok bool) {
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
	out = appendIgnored(out, names)
	return append(out, body[listEnd:]...), true
}

// appendIgnored writes the ignored_parameters_unsupported key, if names is
// not empty, as Zulip's orjson does: compact, with the string escaping of
// every other string of an answer.
func appendIgnored(dst []byte, names []string) []byte {
	if len(names) == 0 {
		return dst
	}
	dst = append(dst, ignoredKey...)
	for i, name := range names {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, name)
	}
	return append(dst, ']')
}
