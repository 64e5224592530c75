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

// acceptsGzip reports whether a request's Accept-Encoding names gzip with
// a q above 0: what Zulip's nginx compresses for (ngx_http_gzip_ok).
func acceptsGzip(h http.Header) bool {
	for _, v := range h.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			name, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
				continue
			}
			for p := range strings.SplitSeq(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					q, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
					return err == nil && q > 0
				}
			}
			return true
		}
	}
	return false
}

// askEncoding sets what a forwarded request asks upstream: gzip for a
// client that accepts it, whose answer then streams to it as the server
// compressed it; identity for any other, which gets the raw answer, as it
// would from Zulip directly.
func (c *call) askEncoding() {
	if acceptsGzip(c.r.Header) {
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
	if acceptsGzip(c.r.Header) {
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
