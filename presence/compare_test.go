package presence

import (
	"strings"
	"testing"
)

func TestCompareAnswers(t *testing.T) {
	body := func(rows, ts, id string) []byte {
		return []byte(strings.NewReplacer("%rows", rows, "%ts", ts, "%id", id).Replace(
			`{"result":"success","msg":"","presences":%rows,"server_timestamp":%ts,"presence_last_update_id":%id}`))
	}
	slim := `{"1":{"active_timestamp":100,"idle_timestamp":120},"2":{"active_timestamp":50,"idle_timestamp":60}}`
	reordered := `{"2":{"active_timestamp":50,"idle_timestamp":60},"1":{"active_timestamp":100,"idle_timestamp":120}}`
	moved := `{"1":{"active_timestamp":100,"idle_timestamp":180},"2":{"active_timestamp":50,"idle_timestamp":60}}`
	dropped := `{"1":{"active_timestamp":100,"idle_timestamp":120}}`
	legacyActive := `{"a@x":{"aggregated":{"client":"website","status":"active","timestamp":100},"website":{"client":"website","status":"active","timestamp":100,"pushable":false}}}`
	legacyIdle := `{"a@x":{"aggregated":{"client":"website","status":"idle","timestamp":170},"website":{"client":"website","status":"idle","timestamp":170,"pushable":false}}}`
	legacyIdleLater := `{"a@x":{"aggregated":{"client":"website","status":"idle","timestamp":175},"website":{"client":"website","status":"idle","timestamp":175,"pushable":false}}}`
	for _, tc := range []struct {
		name         string
		ours, theirs []byte
		opts         CompareOptions
		want         []string // What of each difference
	}{
		{"same", body(slim, "1.5", "7"), body(slim, "1.5", "7"), CompareOptions{}, nil},
		{"order and server_timestamp", body(slim, "1.5", "7"), body(reordered, "2.5", "7"), CompareOptions{}, nil},
		{"a row moved", body(moved, "1.5", "8"), body(slim, "1.5", "8"), CompareOptions{}, []string{"row"}},
		{"a row moved that may have", body(moved, "1.5", "8"), body(slim, "1.5", "8"), CompareOptions{MayDiffer: func(k string) bool { return k == "1" }}, nil},
		{"a row dropped", body(dropped, "1.5", "7"), body(slim, "1.5", "7"), CompareOptions{}, []string{"row"}},
		{"update id of a converted answer", body(slim, "1.5", "9"), body(slim, "1.5", "7"), CompareOptions{Converted: true}, nil},
		{"update id of a served delta", body(slim, "1.5", "9"), body(slim, "1.5", "7"), CompareOptions{}, []string{"presence_last_update_id"}},
		{"ignored parameters", []byte(`{"result":"success","msg":"","ignored_parameters_unsupported":["x"]}`), []byte(`{"result":"success","msg":""}`), CompareOptions{}, []string{"ignored_parameters_unsupported"}},
		{"legacy status within a second of the offset", body(legacyActive, "1.5", "7"), body(legacyIdle, "1.5", "7"), CompareOptions{LegacyOffset: 70}, nil},
		{"legacy status past the offset", body(legacyActive, "1.5", "7"), body(legacyIdleLater, "1.5", "7"), CompareOptions{LegacyOffset: 70}, []string{"row"}},
		{"a row at the window's edge", body(dropped, "86460.5", "7"), body(slim, "86460.5", "7"), CompareOptions{Days: 1}, nil},
		{"a row inside the window", body(dropped, "86400.5", "7"), body(slim, "86400.5", "7"), CompareOptions{Days: 1}, []string{"row"}},
		// Allowance 1: deactivation, reactivation and invisibility take
		// no id, so a row may be in one answer only when its times say
		// it was not written since the handler's full fetch.
		{"a row the server dropped since the full fetch", body(slim, "1.5", "7"), body(dropped, "1.5", "7"), CompareOptions{Synced: 200.5}, nil},
		{"an old row the handler's lacks", body(dropped, "1.5", "7"), body(slim, "1.5", "7"), CompareOptions{Synced: 200.5}, nil},
		{"a row written since the full fetch the handler's lacks", body(dropped, "1.5", "7"), body(slim, "1.5", "7"), CompareOptions{Synced: 60.5}, []string{"row"}},
		{"a row written within a second of the full fetch", body(dropped, "1.5", "7"), body(slim, "1.5", "7"), CompareOptions{Synced: 60.9}, []string{"row"}},
		{"an old legacy row the handler's lacks", body(`{}`, "1.5", "7"), body(legacyIdle, "1.5", "7"), CompareOptions{Synced: 300.5}, nil},
		{"a legacy row written since the full fetch", body(`{}`, "1.5", "7"), body(legacyIdle, "1.5", "7"), CompareOptions{Synced: 150.5}, []string{"row"}},
		{"rows in both still compared", body(moved, "1.5", "8"), body(slim, "1.5", "8"), CompareOptions{Synced: 500.5}, []string{"row"}},
		{"not JSON", []byte(`{"result":"success","msg":""}`), []byte(`<html>`), CompareOptions{}, []string{"body"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, d := range CompareAnswers(tc.ours, tc.theirs, tc.opts) {
				got = append(got, d.What)
				if len(d.String()) > 3*maxShown+100 {
					t.Errorf("difference too long to log: %d bytes", len(d.String()))
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("differences %v, want %v", CompareAnswers(tc.ours, tc.theirs, tc.opts), tc.want)
			}
		})
	}
}
