package releases

import (
	"sort"
	"strconv"
	"strings"
	"testing"
)

// rels builds releases from "v1:live v2:failed ..." (ids in any order).
func rels(spec string) []*Release {
	var out []*Release
	for _, f := range strings.Fields(spec) {
		id, st, _ := strings.Cut(f, ":")
		n, _ := strconv.Atoi(id[1:])
		out = append(out, &Release{ID: id, Number: n, Status: Status(st)})
	}
	return out
}

func ids(rs []*Release) string {
	var s []string
	for _, r := range rs {
		s = append(s, r.ID)
	}
	sort.Strings(s)
	return strings.Join(s, " ")
}

func TestRetentionRules(t *testing.T) {
	cases := []struct {
		name, releases, live string
		keep                 int
		busy                 string
		prune                string
	}{
		{"nothing to prune", "v1:retired v2:live", "v2", 5, "", ""},
		{"keeps the newest good ones", "v1:retired v2:retired v3:retired v4:retired v5:live", "v5", 3, "", "v1 v2"},
		{"failed releases do not count and only the newest failed stays",
			"v1:retired v2:failed v3:retired v4:failed v5:failed v6:live", "v6", 2, "", "v1 v2 v4"},
		{"failed releases never push out the last good one",
			"v1:retired v2:live v3:failed v4:failed v5:failed v6:failed", "v2", 1, "", "v3 v4 v5"},
		{"live release is old after a rollback",
			"v1:retired v2:live v3:rolled-back v4:rolled-back v5:rolled-back", "v2", 2, "", "v3"},
		{"rolled-back releases count as good",
			"v1:retired v2:retired v3:live v4:rolled-back", "v3", 1, "", "v1"},
		{"draining workers keep a release",
			"v1:retired v2:retired v3:retired v4:live", "v4", 1, "v1", "v2"},
		{"keep 0 still keeps live and the rollback target",
			"v1:retired v2:retired v3:retired v4:live v5:failed", "v4", 0, "", "v1 v2"},
		{"keep 0 with nothing older than live",
			"v1:live v2:rolled-back", "v1", 0, "", "v2"},
		{"building and pruned are left alone",
			"v1:pruned v2:retired v3:retired v4:live v5:building", "v4", 0, "", "v2"},
		{"no live release yet", "v1:failed v2:failed v3:building", "", 5, "", "v1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			busy := map[string]bool{}
			for _, b := range strings.Fields(c.busy) {
				busy[b] = true
			}
			p := PlanCleanup(rels(c.releases), c.live, c.keep, busy)
			if got := ids(p.Prune); got != c.prune {
				t.Fatalf("prune = %q, want %q (why: %v)", got, c.prune, p.Why)
			}
			for _, r := range p.Prune {
				if r.ID == c.live {
					t.Fatal("pruned the live release")
				}
			}
		})
	}
}

func TestPreviousGood(t *testing.T) {
	list := rels("v1:retired v2:retired v3:rolled-back v4:live v5:failed")
	if r := PreviousGood(list, "v4"); r == nil || r.ID != "v2" {
		t.Fatalf("previous good = %v, want v2", r)
	}
	if r := PreviousGood(list, "v1"); r != nil {
		t.Fatalf("previous good of the oldest = %v, want none", r)
	}
}
