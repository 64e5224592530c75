package zuliptest

import (
	"bytes"
	"mime/multipart"
	"net/url"
	"sort"
)

// EncodeForm encodes presence parameters as a client sends them: as an
// application/x-www-form-urlencoded body, or as multipart/form-data the way
// zulip-js posts it. It returns the body and its Content-Type.
func EncodeForm(form url.Values, asMultipart bool) (body []byte, contentType string) {
	if !asMultipart {
		return []byte(form.Encode()), "application/x-www-form-urlencoded"
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	keys := make([]string, 0, len(form))
	for k := range form {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range form[k] {
			_ = mw.WriteField(k, v) // a bytes.Buffer never fails
		}
	}
	_ = mw.Close()
	return buf.Bytes(), mw.FormDataContentType()
}
