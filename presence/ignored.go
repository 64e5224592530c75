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
	i, listEnd, names := ignoredList(body)
	if i < 0 || !slices.Contains(names, name) {
		return nil, false
	}
	names = slices.DeleteFunc(names, func(n string) bool { return n == name })
	out = append(out, body[:i]...)
	out = appendIgnored(out, names)
	return append(out, body[listEnd:]...), true
}

// IgnoredIn returns the ignored_parameters_unsupported list at the end of a
// Zulip answer, nil when there is none or it cannot be read.
func IgnoredIn(body []byte) []string {
	_, _, names := ignoredList(body)
	return names
}

// ignoredList finds the ignored_parameters_unsupported key at the end of
// body: where the key starts (-1 when there is none readable), where its
// list ends, and the names it lists.
func ignoredList(body []byte) (start, end int, names []string) {
	i := bytes.LastIndex(body, ignoredKey)
	if i < 0 {
		return -1, 0, nil
	}
	listStart := i + len(ignoredKey) - 1
	n := bytes.IndexByte(body[listStart:], ']')
	if n < 0 {
		return -1, 0, nil
	}
	end = listStart + n + 1
	if err := json.Unmarshal(body[listStart:end], &names); err != nil {
		return -1, 0, nil
	}
	return i, end, names
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
