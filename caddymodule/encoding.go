package caddymodule

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// Compression on the upstream link (design §3). Zulip's nginx
// (puppet/zulip/templates/nginx.conf.template.erb: gzip on; gzip_proxied
// any; gzip_types … application/json …; gzip_vary on) compresses every
// JSON answer at level 1 for a request whose Accept-Encoding names gzip.
// The handler asks for gzip on its own fetches and, for clients that
// accept it, on the requests it forwards: forwarded answers stream to the
// client as they came, and the handler decodes, within a bound, only what
// it must read. Naming an Accept-Encoding on every upstream request also
// keeps Go's transport from asking for gzip on its own and decoding the
// answer without any bound.

// Bounds on decoding an answer that came compressed. Level-1 gzip makes
// Zulip's JSON 3 to 15 times smaller; a gzip bomb is about 1 000 times.
// An answer may decode to decodeFloor, or to decodeRatio times its
// compressed size if that is more, and never past maxDecoded: a
// compressed body costs at most decodeRatio times the bytes received.
const (
	decodeFloor = 1 << 20
	decodeRatio = 64
	maxDecoded  = 64 << 20
)

// decodeLimit is how far a fetched answer of compressed bytes may decode.
func decodeLimit(compressed int) int {
	return min(maxDecoded, max(decodeFloor, decodeRatio*compressed))
}

// acceptsGzip reports whether Zulip's nginx would compress its answer to
// the request (ngx_http_gzip_ok, gzip_http_version 1.1): an HTTP/1.1 or
// later request whose first Accept-Encoding line names gzip as
// ngx_http_gzip_accept_encoding reads it.
func acceptsGzip(r *http.Request) bool {
	vs := r.Header.Values("Accept-Encoding")
	return r.ProtoAtLeast(1, 1) && len(vs) > 0 && nginxAcceptsGzip(vs[0])
}

// nginxAcceptsGzip is ngx_http_gzip_accept_encoding
// (src/http/ngx_http_core_module.c), quirks kept (zuliptest has its own
// reading of the same function, on purpose: the two check each other): "gzip" found without
// regard to ASCII case where it starts the value, follows "," or " ", or
// starts what is left after a rejected match; then only spaces, a ",", or
// ";" and a q that ngx_http_gzip_quantity reads as above 0.
func nginxAcceptsGzip(ae string) bool {
	start, p := 0, 0
	for {
		i := indexASCIIFold(ae[start:], "gzip")
		if i < 0 {
			return false
		}
		p = start + i
		if p == start || ae[p-1] == ',' || ae[p-1] == ' ' {
			break
		}
		start = p + 4
	}
	for p += 4; p < len(ae); p++ {
		switch ae[p] {
		case ',':
			return true
		case ';':
			return nginxQuality(ae[p+1:])
		case ' ':
		default:
			return false
		}
	}
	return true
}

// nginxQuality reads what follows "gzip;" as nginx does: spaces, "q"
// (either case), "=", and a quantity above 0.
func nginxQuality(s string) bool {
	i := 0
	for i < len(s) && s[i] == ' ' {
		i++
	}
	if i == len(s) {
		return true
	}
	if s[i] != 'q' && s[i] != 'Q' {
		return false
	}
	s = s[i+1:]
	if len(s) < 2 || s[0] != '=' {
		return false
	}
	return nginxQuantity(s[1:]) > 0
}

// nginxQuantity is ngx_http_gzip_quantity: "0" or "1", then optionally "."
// and at most three digits (added, not scaled, as nginx does), up to a ","
// or " "; anything else, or more than 100, is 0.
func nginxQuantity(s string) int {
	c := s[0]
	if c != '0' && c != '1' {
		return 0
	}
	q := int(c-'0') * 100
	if len(s) == 1 {
		return q
	}
	switch s[1] {
	case ',', ' ':
		return q
	case '.':
	default:
		return 0
	}
	n := 0
	for _, c := range []byte(s[2:]) {
		if c == ',' || c == ' ' {
			break
		}
		if c < '0' || c > '9' {
			return 0
		}
		q += int(c - '0')
		n++
	}
	if q > 100 || n > 3 {
		return 0
	}
	return q
}

// indexASCIIFold is strings.Index ignoring ASCII case, as ngx_strcasestrn.
// strings.EqualFold serves for a needle such as "gzip", whose letters
// fold to nothing beyond their ASCII cases.
func indexASCIIFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}

// askEncoding sets what a forwarded request asks upstream: gzip for a
// client that accepts it, whose answer then streams to it as the server
// compressed it; identity for any other, which gets the raw answer, as it
// would from Zulip directly.
func (c *call) askEncoding() {
	if acceptsGzip(c.r) {
		c.r.Header.Set("Accept-Encoding", "gzip")
	} else {
		c.r.Header.Set("Accept-Encoding", "identity")
	}
}

// contentCoding classifies an answer's Content-Encoding: plain for none or
// identity, gz for gzip (x-gzip too), and neither for anything else,
// which the handler cannot read.
func contentCoding(hdr http.Header) (plain, gz bool) {
	vs := hdr.Values("Content-Encoding")
	if len(vs) == 0 {
		return true, false
	}
	if len(vs) > 1 {
		return false, false
	}
	switch strings.ToLower(strings.TrimSpace(vs[0])) {
	case "", "identity":
		return true, false
	case "gzip", "x-gzip":
		return false, true
	}
	return false, false
}

// gzipReaders recycle decompressors: each holds a 32 KiB window.
var gzipReaders sync.Pool

// gunzip decodes src, a whole gzip body, into dst. ok is false, with dst
// holding a prefix, when src is not valid gzip, is cut short, or decodes
// to more than limit bytes; decoding stops there, so a compressed body
// never costs more than limit bytes.
func gunzip(dst *bytes.Buffer, src []byte, limit int) (ok bool) {
	zr, _ := gzipReaders.Get().(*gzip.Reader)
	var err error
	if zr == nil {
		zr, err = gzip.NewReader(bytes.NewReader(src))
	} else {
		err = zr.Reset(bytes.NewReader(src))
	}
	if err != nil {
		return false
	}
	defer gzipReaders.Put(zr)
	n, err := io.Copy(dst, io.LimitReader(zr, int64(limit)+1))
	return err == nil && n <= int64(limit)
}

// decode replaces a fetched answer's body by its decoded form when it
// came compressed: the bytes as received stay in wire, for a client that
// takes them as they are, and Content-Encoding leaves the header, which
// then describes the decoded body. An answer that cannot be decoded
// within decodeLimit keeps its Content-Encoding and has no body: it is
// no success, and only a client that accepts gzip can be given it.
func (rec *recorder) decode() {
	rec.received = rec.body.Len()
	plain, gz := contentCoding(rec.header)
	if plain {
		return
	}
	rec.wire = rec.body.Bytes()
	rec.coding = rec.header.Values("Content-Encoding")
	rec.body = bytes.Buffer{}
	if gz && gunzip(&rec.body, rec.wire, decodeLimit(len(rec.wire))) {
		rec.header.Del("Content-Encoding")
		rec.header.Del("Content-Length")
		return
	}
	rec.body = bytes.Buffer{}
	rec.undecoded = true
}

// passOn gives the client a fetched answer the handler does not use, as
// the server wrote it: as it came to a client that accepts gzip, decoded
// to any other. ok is false, with nothing written, when the answer could
// not be decoded within its bound: the handler cannot tell what it is
// (a success to the fetch is no answer to the client's request), so the
// caller falls back to forwarding the client's own request, whose answer
// streams to the client as it comes.
func (c *call) passOn(rec *recorder) (ok bool, err error) {
	switch {
	case rec.wire == nil:
		return true, rec.replay(c.w)
	case rec.undecoded:
		return false, nil
	}
	hdr := c.w.Header()
	copyHeader(hdr, rec.header)
	body := rec.body.Bytes()
	if acceptsGzip(c.r) {
		hdr["Content-Encoding"] = rec.coding
		body = rec.wire
	}
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	c.w.WriteHeader(rec.status)
	_, err = c.w.Write(body)
	return true, err
}

// decode turns what the tap kept of a forwarded answer into the answer's
// decoded body, for the handler to read, once the answer is complete:
// head is then the whole body, decoded if it came compressed, and decode
// reports whether it is. A body larger than the capture limit, before or
// after decoding, or one that could not be decoded, is not whole, and a
// compressed one leaves head nil. Calling it again does nothing more.
func (t *tap) decode() (whole bool) {
	if t.decoded {
		return t.whole
	}
	t.decoded = true
	t.whole = t.size <= len(t.head)
	plain, gz := contentCoding(t.Header())
	if plain || !t.whole {
		return t.whole
	}
	var buf bytes.Buffer
	if gz && gunzip(&buf, t.head, t.limit) {
		t.head = buf.Bytes()
		return true
	}
	t.head, t.whole = nil, false
	return false
}
