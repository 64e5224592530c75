package zuliptest

import (
	"bytes"
	"mime"
	"mime/multipart"
	"net/url"
	"testing"
)

func TestEncodeForm(t *testing.T) {
	form := url.Values{"status": {"active"}, "slim_presence": {"true"}}
	body, ctype := EncodeForm(form, false)
	if ctype != "application/x-www-form-urlencoded" || string(body) != "slim_presence=true&status=active" {
		t.Fatalf("urlencoded: %q %q", ctype, body)
	}
	body, ctype = EncodeForm(form, true)
	mediaType, params, err := mime.ParseMediaType(ctype)
	if err != nil || mediaType != "multipart/form-data" {
		t.Fatalf("multipart content type %q: %v", ctype, err)
	}
	parsed, err := multipart.NewReader(bytes.NewReader(body), params["boundary"]).ReadForm(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	if got := url.Values(parsed.Value); got.Encode() != form.Encode() {
		t.Fatalf("multipart round trip: %v", got)
	}
}
