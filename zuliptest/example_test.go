package zuliptest_test

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
)

// A presence ping and a full slim poll against a simulated Zulip 11.x, on
// a clock the example moves by hand.
func Example() {
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	srv := httptest.NewServer(zuliptest.New(func() time.Time { return now }))
	defer srv.Close()
	realm := srv.Config.Handler.(*zuliptest.Server).DefaultRealm()
	hamlet := realm.AddUser("hamlet@zulip.example", "Hamlet", zuliptest.RoleMember)

	post := func(form string) string {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/api/v1/users/me/presence", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", realm.BasicAuth(hamlet.ID))
		resp, err := http.DefaultTransport.RoundTrip(req) // no gzip asked: raw JSON
		if err != nil {
			return err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	fmt.Println(post("status=active&ping_only=true"))
	now = now.Add(30 * time.Second)
	fmt.Println(post("status=active&slim_presence=true"))
	fmt.Println(realm.Stats().RowsWritten, "row written: the second write was within 55 s")
	// Output:
	// 200 {"result":"success","msg":""}
	// 200 {"result":"success","msg":"","presences":{"1":{"active_timestamp":1796644800,"idle_timestamp":1796644800}},"server_timestamp":1796644830.0,"presence_last_update_id":1}
	// 1 row written: the second write was within 55 s
}
