package main

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/zulip-presence/caddy-zulip-presence/zuliptest"
	"github.com/zulip-presence/caddy-zulip-presence/zuliptest/simclock"
)

// checkerRig is a realm with a viewer and two other users, and the
// shared-mode checker over it.
type checkerRig struct {
	t      *testing.T
	clk    *simclock.Clock
	realm  *zuliptest.Realm
	sc     *sharedChecker
	viewer *client
	others []int64
}

func newCheckerRig(t *testing.T) *checkerRig {
	clk := simclock.New(clockStart)
	realm := zuliptest.New(clk.Now).DefaultRealm()
	rig := &checkerRig{t: t, clk: clk, realm: realm}
	emails := map[int64]string{}
	var ids []int64
	for _, email := range []string{"viewer@zulip.example", "ada@zulip.example", "alan@zulip.example"} {
		u := realm.AddUser(email, email, zuliptest.RoleMember)
		emails[u.ID] = u.Email
		ids = append(ids, u.ID)
		realm.SetPresenceRow(u.ID, clk.Now().Add(-time.Hour).Truncate(time.Second), time.Time{})
	}
	rig.viewer = &client{kind: KindFlutter, user: &simUser{id: ids[0]}}
	rig.others = ids[1:]
	rig.sc = &sharedChecker{realm: realm, staleness: 10 * time.Second, emails: emails}
	return rig
}

// write stores a fresh row for the user, as a write at the clock's second.
func (rig *checkerRig) write(id int64) {
	now := rig.clk.Now().Truncate(time.Second)
	rig.realm.SetPresenceRow(id, now, now)
}

// render is the realm's answer to the viewer's poll as of update id x at
// instant at.
func (rig *checkerRig) render(x int64, at time.Time, req zuliptest.AsOfRequest) []byte {
	b, err := rig.realm.RenderAsOf(rig.viewer.user.id, x, at, req)
	if err != nil {
		rig.t.Fatal(err)
	}
	return b
}

// job is a poll of the viewer answered directly now and by the module
// with body.
func (rig *checkerRig) job(f map[string]string, module []byte) *job {
	j := newJob(rig.viewer, nil, form())
	for k, v := range f {
		j.form.Set(k, v)
	}
	j.poll = j.form.Get("ping_only") != "true"
	j.sec = int(rig.clk.Now().Sub(clockStart) / time.Second)
	j.hi = rig.realm.LastUpdateID()
	j.row[sideDirect] = rig.realm.PresenceRow(rig.viewer.user.id)
	j.ans[sideDirect] = answer{status: http.StatusOK, body: rig.render(j.hi, rig.clk.Now(), j.asOfRequest())}
	j.ans[sideModule] = answer{status: http.StatusOK, body: module}
	return j
}

// TestSharedCheckerAcceptsAnswersAsOfEarlier: an answer that stood a few
// seconds before the direct one, at an earlier update id, passes; one that
// differs in a row, one older than max_staleness, and one that misses the
// requester's own fresh row do not.
func TestSharedCheckerAcceptsAnswersAsOfEarlier(t *testing.T) {
	for _, f := range []map[string]string{
		{"status": "active", "slim_presence": "true"},
		{"status": "active"},
		{"status": "active", "slim_presence": "true", "history_limit_days": "3"},
	} {
		rig := newCheckerRig(t)
		rig.clk.Advance(30 * time.Second)
		rig.write(rig.others[0])
		then, thenID := rig.clk.Now(), rig.realm.LastUpdateID()
		req := (&job{form: form()}).asOfRequestFrom(f)
		stale := rig.render(thenID, then, req)

		rig.clk.Advance(5 * time.Second)
		rig.write(rig.others[1])
		var scratch []byte
		j := rig.job(f, stale)
		if err := rig.sc.check(j, &scratch); err != nil {
			t.Fatalf("%v: an answer 5 s old, as of id %d, was refused: %v", f, thenID, err)
		}
		if !j.asOf.searched || j.asOf.stale != 5 || j.asOf.back != 1 {
			t.Errorf("%v: asOf = %+v, want searched, 5 s stale, one id back", f, j.asOf)
		}

		// A row the realm never held at any id in range.
		key := rig.sc.entryKey(j, rig.others[0])
		entry, ok, _ := presenceEntry(stale, key)
		if !ok {
			t.Fatalf("%v: no entry %s in %s", f, key, stale)
		}
		tampered := bytes.Replace(stale, entry, bytes.Replace(entry, []byte(`timestamp":`), []byte(`timestamp":1`), 1), 1)
		if err := rig.sc.check(rig.job(f, tampered), &scratch); err == nil || !strings.Contains(err.Error(), string(key)) {
			t.Errorf("%v: a tampered answer: %v, want a difference in %s", f, err, key)
		} else {
			t.Log(err)
		}

		// Too old: 15 s.
		rig.clk.Advance(10 * time.Second)
		err := rig.sc.check(rig.job(f, stale), &scratch)
		if err == nil || !strings.Contains(err.Error(), "max_staleness") {
			t.Errorf("%v: an answer 15 s old: %v, want a max_staleness violation", f, err)
		}

		// The viewer writes; an answer from before that write lacks the
		// requester's own row as of now.
		rig.write(rig.viewer.user.id)
		before := rig.render(rig.realm.LastUpdateID()-1, rig.clk.Now(), req)
		if err := rig.sc.check(rig.job(f, before), &scratch); err == nil {
			t.Errorf("%v: an answer without the requester's own fresh row passed", f)
		} else {
			t.Log(err)
		}
		// Another user's write the module has not seen yet is fine.
		rig.clk.Advance(2 * time.Second)
		mine := rig.render(rig.realm.LastUpdateID(), rig.clk.Now(), req)
		rig.clk.Advance(3 * time.Second)
		rig.write(rig.others[0])
		if err := rig.sc.check(rig.job(f, mine), &scratch); err != nil {
			t.Errorf("%v: an answer 3 s old with the requester's own row was refused: %v", f, err)
		}
	}
}

// asOfRequestFrom is asOfRequest for a form given as a map.
func (j *job) asOfRequestFrom(f map[string]string) zuliptest.AsOfRequest {
	j.form = form()
	for k, v := range f {
		j.form.Set(k, v)
	}
	return j.asOfRequest()
}

func TestSplitObject(t *testing.T) {
	body := []byte(`{"result":"success","msg":"a,\"}b","presences":{"1":{"active_timestamp":5,"idle_timestamp":6},"x@y":{"aggregated":{"client":"website","status":"idle","timestamp":6}}},"server_timestamp":1.5,"presence_last_update_id":-1,"ignored_parameters_unsupported":["a","b"]}` + "\n")
	top, err := zuliptest.SplitObject(body)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, m := range top {
		keys = append(keys, string(m.Key))
	}
	if got := strings.Join(keys, " "); got != `"result" "msg" "presences" "server_timestamp" "presence_last_update_id" "ignored_parameters_unsupported"` {
		t.Fatalf("keys %s", got)
	}
	if v, ok, err := presenceEntry(body, []byte(`"x@y"`)); err != nil || !ok || string(v) != `{"aggregated":{"client":"website","status":"idle","timestamp":6}}` {
		t.Fatalf("entry %s %v %v", v, ok, err)
	}
	if ts, ok := serverTimestampOf(body); !ok || ts != 1.5 {
		t.Fatalf("server_timestamp %v %v", ts, ok)
	}
	exp, err := expectedAsOf(body, []byte(`"1"`), []byte(`{"active_timestamp":7,"idle_timestamp":8}`), true, 9, -1, false)
	if err != nil || !bytes.Contains(exp, []byte(`"1":{"active_timestamp":7,"idle_timestamp":8}`)) || bytes.Contains(exp, []byte(`"active_timestamp":5`)) {
		t.Fatalf("expectedAsOf = %s, %v", exp, err)
	}
	if err := zuliptest.Compare(zuliptest.Answer{Status: 200, Body: body}, zuliptest.Answer{Status: 200, Body: body}, false); err != nil {
		t.Fatal(err)
	}
}

// TestOverrideVariants: -mode, -trust and -instances pick the runs.
func TestOverrideVariants(t *testing.T) {
	for _, tc := range []struct {
		mode, trust string
		instances   int
		gaps        float64
		want        []Variant // of R2k in the full run
		err         bool
	}{
		{"both", "", 0, -1, []Variant{sessionRun, sharedRun, sharedTrust, sharedTwo, sharedGaps, sessionMain, sharedMain, sessionShadow, sharedShadow, sessionVerify, sharedVerify}, false},
		{"session", "", 0, -1, []Variant{sessionRun, sessionMain, sessionShadow, sessionVerify}, false},
		{"shared", "", 0, -1, []Variant{sharedRun, sharedTrust, sharedTwo, sharedGaps, sharedMain, sharedShadow, sharedVerify}, false},
		{"shared", "5m", 0, -1, []Variant{{Mode: "shared", Trust: 5 * time.Minute, GapRate: realisticGaps}}, false},
		{"both", "", 2, -1, []Variant{sessionRun, {Mode: "shared", Instances: 2, GapRate: realisticGaps}}, false},
		{"shared", "", 0, 0.01, []Variant{sharedGaps}, false},
		{"shared", "", 0, 0, []Variant{{Mode: "shared"}}, false},
		{"session", "5m", 0, -1, nil, true},
		{"session", "", 0, 0.01, nil, true},
		{"shared", "", 3, -1, nil, true},
		{"shared", "", 0, 2, nil, true},
		{"shred", "", 0, -1, nil, true},
		{"shared", "-1s", 0, -1, nil, true},
	} {
		cfg := fullConfig(1)
		err := cfg.overrideVariants(tc.mode, tc.trust, tc.instances, tc.gaps)
		if (err != nil) != tc.err {
			t.Errorf("%+v: error %v", tc, err)
			continue
		}
		if err == nil {
			got := cfg.variantsFor(specR2k)
			if len(got) != len(tc.want) {
				t.Errorf("%+v: runs %v, want %v", tc, got, tc.want)
				continue
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("%+v: runs %v, want %v", tc, got, tc.want)
				}
			}
		}
	}
	if s := sharedTrust.String() + "; " + sharedTwo.String() + "; " + sharedGaps.String(); s != "shared, trust_window 5m; shared, 2 instances; shared, id gaps 0.01" {
		t.Errorf("names %q", s)
	}
}

// TestSharedCheckerIncrementalPolls: a web tab's poll, whose cursor
// through the module differs from the direct tab's, is checked at the
// module side's cursor; an answer that claims a cursor past rows it lacks
// fails.
func TestSharedCheckerIncrementalPolls(t *testing.T) {
	rig := newCheckerRig(t)
	rig.viewer.kind = KindWeb
	tb := &tab{}
	rig.clk.Advance(30 * time.Second)
	rig.write(rig.others[0])
	cm := rig.realm.LastUpdateID() // the module tab's cursor
	rig.clk.Advance(2 * time.Second)
	rig.write(rig.others[1])
	then, thenID := rig.clk.Now(), rig.realm.LastUpdateID()
	rig.clk.Advance(3 * time.Second)
	rig.write(rig.others[0])
	mk := func(module []byte) *job {
		j := newJob(rig.viewer, tb, form("status", "active", "ping_only", "false"))
		j.cursor = [numSides]int64{rig.realm.LastUpdateID(), cm}
		j.sec = int(rig.clk.Now().Sub(clockStart) / time.Second)
		j.hi = rig.realm.LastUpdateID()
		j.row[sideDirect] = rig.realm.PresenceRow(rig.viewer.user.id)
		c := j.cursor[sideDirect]
		j.ans[sideDirect] = answer{status: http.StatusOK, body: rig.render(j.hi, rig.clk.Now(), zuliptest.AsOfRequest{LastUpdateID: &c})}
		j.ans[sideModule] = answer{status: http.StatusOK, body: module}
		return j
	}
	req := zuliptest.AsOfRequest{LastUpdateID: &cm}
	var scratch []byte
	good := rig.render(thenID, then, req)
	if err := rig.sc.check(mk(good), &scratch); err != nil {
		t.Fatalf("an incremental answer as of id %d (%s) was refused: %v", thenID, good, err)
	}
	// Claims the newest id while it lacks the newest change.
	bad := bytes.Replace(good, []byte(`"presence_last_update_id":`+itoa(thenID)), []byte(`"presence_last_update_id":`+itoa(thenID+1)), 1)
	if bytes.Equal(bad, good) {
		t.Fatalf("no cursor in %s", good)
	}
	if err := rig.sc.check(mk(bad), &scratch); err == nil {
		t.Error("an answer claiming a cursor past a row it lacks passed")
	} else {
		t.Log(err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
