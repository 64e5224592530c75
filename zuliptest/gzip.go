package zuliptest

import (
	"bytes"
	"compress/gzip"
	"mime"
	"net/http"
	"strconv"
	"strings"
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

// AcceptsGzip is ngx_http_gzip_ok for Zulip's configuration: an HTTP/1.1
// or later request whose Accept-Encoding lists gzip with a q other than 0.
func AcceptsGzip(r *http.Request) bool {
	if !r.ProtoAtLeast(1, 1) {
		return false
	}
	for _, v := range r.Header.Values("Accept-Encoding") {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
				continue
			}
			q := 1.0
			for _, p := range strings.Split(params, ";") {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					if f, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
						q = f
					}
				}
			}
			return q > 0
		}
	}
	return false
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
