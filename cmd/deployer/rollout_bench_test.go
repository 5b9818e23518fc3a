package main

import (
	"fmt"
	"os"
	"slices"
	"testing"
	"time"
)

// TestBenchFleetRolloutAgainstThreePushes measures, in one run, the time
// a push takes to go live on three hosts through a fleet rollout (built
// once, shipped), against three pushes by hand to three hosts that know
// nothing of each other (built three times, one after the other). It is a
// measurement, not a check: it runs only with DEPLOYER_BENCH=1 (see
// bench/fleet-rollout.sh) and logs the medians and their ratio.
func TestBenchFleetRolloutAgainstThreePushes(t *testing.T) {
	if os.Getenv("DEPLOYER_BENCH") == "" {
		t.Skip("a measurement: run bench/fleet-rollout.sh, or set DEPLOYER_BENCH=1")
	}
	rounds := 5
	d1, _, _ := threeHosts(t, "")
	alone := []*daemon{newDaemon(t, ""), newDaemon(t, ""), newDaemon(t, "")}
	fleetRepo, aloneRepo := newRolloutRepo(t), newRolloutRepo(t)
	fleetRepo.mustPush(d1)
	for _, d := range alone {
		aloneRepo.mustPush(d)
	}
	var rollout, byHand []time.Duration
	for i := range rounds {
		msg := fmt.Sprintf("round %d", i)
		fleetRepo.commit(msg, map[string]string{"message.txt": msg})
		t0 := time.Now()
		fleetRepo.mustPush(d1)
		rollout = append(rollout, time.Since(t0))

		aloneRepo.commit(msg, map[string]string{"message.txt": msg})
		t0 = time.Now()
		for _, d := range alone {
			aloneRepo.mustPush(d)
		}
		byHand = append(byHand, time.Since(t0))
	}
	slices.Sort(rollout)
	slices.Sort(byHand)
	r, h := rollout[rounds/2], byHand[rounds/2]
	t.Logf("push live on 3 hosts, median of %d: fleet rollout %.2fs, 3 pushes by hand %.2fs: the rollout takes %.2fx the time",
		rounds, r.Seconds(), h.Seconds(), r.Seconds()/h.Seconds())
	t.Logf("all rounds: rollout %v; by hand %v", rollout, byHand)
}
