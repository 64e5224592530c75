package zuliptest

import (
	"bytes"
	"compress/gzip"
	"mime"
	"net/http"
	"sync"
)

// Zulip serves its API behind nginx, whose configuration
// (puppet/zulip/templates/nginx.conf.template.erb) compresses answers:
//
//	gzip on;
//	gzip_proxied any;
//	gzip_types application/javascript application/json application/xml
//	  application/x-javascript image/svg+xml text/css text/javascript text/plain;
//	gzip_vary on;
//
// It sets no gzip_comp_level (nginx's default, 1), no gzip_min_length
// (default 20 bytes) and no gzip_http_version (default 1.1). nginx's gzip
// filter (ngx_http_gzip_filter_module.c) takes an answer whose status is
// 200, 403 or 404, that has no Content-Encoding yet, is at least
// gzip_min_length long, has one of gzip_types (text/html always) and is
// not the answer to a HEAD; it then marks it Vary: Accept-Encoding, and
// compresses it when the request is HTTP/1.1 or later and its
// Accept-Encoding names gzip with a non-zero q (ngx_http_gzip_ok; "*" and
// "x-gzip" do not count). gzip_proxied any compresses for requests that
// came through a proxy (Via) too.

// DefaultGzipLevel is nginx's default gzip_comp_level, which Zulip's
// configuration does not change.
const DefaultGzipLevel = 1

// gzipMinLength is nginx's default gzip_min_length.
const gzipMinLength = 20

// gzipTypes are the gzip_types of Zulip's nginx.conf, with text/html,
// which nginx always compresses.
var gzipTypes = map[string]bool{
	"application/javascript": true, "application/json": true, "application/xml": true,
	"application/x-javascript": true, "image/svg+xml": true, "text/css": true,
	"text/javascript": true, "text/plain": true, "text/html": true,
}

// SetGzipLevel sets the gzip_comp_level of the nginx in front of the
// server: 1 (DefaultGzipLevel, what Zulip's nginx uses) to 9, or 0 to
// model a server without nginx's compression, whose every answer is the
// raw bytes Django wrote. Other levels are clamped.
func (s *Server) SetGzipLevel(level int) {
	s.gzipLevel.Store(int32(min(max(level, 0), gzip.BestCompression)))
}

// GzipLevel returns the gzip_comp_level in effect; 0 means off.
func (s *Server) GzipLevel() int { return int(s.gzipLevel.Load()) }

// gzipEligible reports whether nginx's gzip filter takes the answer: it
// then carries Vary: Accept-Encoding, compressed or not.
func gzipEligible(r *http.Request, status int, hdr http.Header, body []byte) bool {
	if status != http.StatusOK && status != http.StatusForbidden && status != http.StatusNotFound {
		return false
	}
	if hdr.Get("Content-Encoding") != "" || len(body) < gzipMinLength || r.Method == http.MethodHead {
		return false
	}
	mt, _, err := mime.ParseMediaType(hdr.Get("Content-Type"))
	return err == nil && gzipTypes[mt]
}

// AcceptsGzip is ngx_http_gzip_ok for Zulip's configuration
// (gzip_http_version 1.1): an HTTP/1.1 or later request whose first
// Accept-Encoding line ngx_http_gzip_accept_encoding accepts.
func AcceptsGzip(r *http.Request) bool {
	ae := r.Header.Values("Accept-Encoding")
	return r.ProtoAtLeast(1, 1) && len(ae) > 0 && gzipAcceptEncoding([]byte(ae[0]))
}

// gzipAcceptEncoding follows ngx_http_gzip_accept_encoding
// (src/http/ngx_http_core_module.c) step by step: find "gzip" ignoring
// ASCII case at the start of what is searched or after "," or " ", then
// skip spaces to "," (yes), the end (yes) or ";" (read the q), anything
// else being a no.
func gzipAcceptEncoding(ae []byte) bool {
	start := 0
	var p int
	for {
		i := bytes.Index(lowerASCIIBytes(ae[start:]), []byte("gzip"))
		if i < 0 {
			return false
		}
		p = start + i
		if p == start || ae[p-1] == ',' || ae[p-1] == ' ' {
			break
		}
		start = p + 4
	}
	p += 4
	for ; p < len(ae); p++ {
		switch ae[p] {
		case ',':
			return true
		case ';':
			return gzipQuantityPart(ae[p+1:])
		case ' ':
			continue
		default:
			return false
		}
	}
	return true
}

// lowerASCIIBytes is a copy of b with A–Z lowered, as ngx_tolower does;
// offsets stay those of b.
func lowerASCIIBytes(b []byte) []byte {
	out := make([]byte, len(b))
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		out[i] = c
	}
	return out
}

// gzipQuantityPart is the "quantity:" and "equal:" labels of
// ngx_http_gzip_accept_encoding.
func gzipQuantityPart(ae []byte) bool {
	for p := 0; p < len(ae); p++ {
		switch ae[p] {
		case 'q', 'Q':
			rest := ae[p+1:]
			return len(rest) >= 2 && rest[0] == '=' && gzipQuantity(rest[1:]) != 0
		case ' ':
			continue
		default:
			return false
		}
	}
	return true
}

// gzipQuantity is ngx_http_gzip_quantity.
func gzipQuantity(b []byte) int {
	if b[0] != '0' && b[0] != '1' {
		return 0
	}
	q := int(b[0]-'0') * 100
	if len(b) == 1 || b[1] == ',' || b[1] == ' ' {
		return q
	}
	if b[1] != '.' {
		return 0
	}
	n := 0
	for _, c := range b[2:] {
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

// gzipWriters recycle compressors, one pool per level.
var gzipWriters [gzip.BestCompression + 1]sync.Pool

// compress is the body nginx sends for body at level.
func compress(body []byte, level int) []byte {
	var buf bytes.Buffer
	buf.Grow(len(body)/4 + 64)
	zw, _ := gzipWriters[level].Get().(*gzip.Writer)
	if zw == nil {
		zw, _ = gzip.NewWriterLevel(&buf, level)
	} else {
		zw.Reset(&buf)
	}
	_, _ = zw.Write(body)
	_ = zw.Close()
	gzipWriters[level].Put(zw)
	return buf.Bytes()
}
