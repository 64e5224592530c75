package zuliptest

import (
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// TestImportRegistersNothing guards the split from package caddysim: a test
// or program that imports zuliptest gets no zulip_sim module.
func TestImportRegistersNothing(t *testing.T) {
	if _, err := caddy.GetModule("http.handlers.zulip_sim"); err == nil {
		t.Fatal("importing zuliptest registered http.handlers.zulip_sim")
	}
}
