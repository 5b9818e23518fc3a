package supervisor

import (
	"context"
	"os"
	"testing"
	"time"
)

// A pacer does not let its user past the budget: wait returns only once
// the CPU used is within cores × the time since the start, plus warmBurst.
func TestPacerWaitsUntilTheBudgetCoversWhatWasUsed(t *testing.T) {
	var used time.Duration
	pc := newPacer(0.5, func() time.Duration { return used })
	used = 120 * time.Millisecond // 100ms over the burst: 200ms at half a core
	pc.wait(context.Background())
	if waited := time.Since(pc.start); waited < 200*time.Millisecond {
		t.Fatalf("wait returned after %s; the budget covers 120ms of CPU at 0.5 cores only after 200ms", waited)
	}
	ctx, cancel := context.WithCancel(context.Background())
	used = time.Hour
	time.AfterFunc(50*time.Millisecond, cancel)
	pc.wait(ctx) // returns with ctx, not in two hours
}

func TestSpareCPUCountsIdleTimeAndThePoolsOwn(t *testing.T) {
	from := idleSample{idle: 10 * time.Second, ok: true}
	to := idleSample{idle: 10*time.Second + 600*time.Millisecond, ok: true}
	if got := spareCPU(from, to, time.Second, 400*time.Millisecond); got != 1.0 {
		t.Fatalf("spare = %v; want 1 core (0.6 idle + 0.4 the pool took)", got)
	}
	if got := spareCPU(idleSample{}, to, time.Second, 0); got != 0 {
		t.Fatalf("spare without a first sample = %v; want 0", got)
	}
	if s := sampleIdle(); !s.ok || s.idle <= 0 {
		t.Fatalf("/proc/stat: %+v", s)
	}
	for t0 := time.Now(); time.Since(t0) < 50*time.Millisecond; {
	}
	if cpuTime(os.Getpid()) <= 0 {
		t.Fatal("cpuTime of this process is 0 after 50ms of work")
	}
}

// A paced warm-up holds the pool's processes to its budget, all of their
// CPU counted (here up to 4 ms per request, as a cold worker spends):
// unpaced, the same warm-up takes both cores.
func TestWarmHoldsThePoolToItsCPUBudget(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, helperStart(t), 2)
	spec.Env["HELPER_BURN"] = "4ms"
	green := startPool(t, spec)

	pc := newPacer(minWarmCPU, green.cpuTime)
	r := warm(context.Background(), Warmup{Addr: ss[0].LocalAddr(), Path: "/", Conns: 4, Requests: 100, Limit: time.Minute},
		len(green.workers), green.connOwner, pc)
	elapsed := time.Since(pc.start)
	used := green.cpuTime() - pc.base
	if r.OK != 100 {
		t.Fatalf("ok %d of 100, first failure %v", r.OK, r.First)
	}
	// At most the budget, the burst, and what the requests let through
	// last (8 connections) spent after the check, with the clock's tick.
	bound := time.Duration(minWarmCPU*float64(elapsed)) + warmBurst + 8*10*time.Millisecond + 2*clockTick
	t.Logf("100 requests of 4ms: %s of CPU in %s (budget %.2f cores: %s)", used, elapsed, minWarmCPU, bound)
	if used < 100*time.Millisecond {
		t.Fatalf("the pool used %s for 100 requests of 4ms: its CPU is not counted", used)
	}
	if used > bound {
		t.Fatalf("the pool used %s in %s, over its budget of %.2f cores (%s)", used, elapsed, minWarmCPU, bound)
	}

	res := green.Warm(context.Background(), Warmup{Addr: ss[0].LocalAddr(), Path: "/", Conns: 4, Requests: 20, Limit: time.Minute, Share: 0.5})
	if res.OK != 20 || res.CPU < minWarmCPU || res.CPU != max(0.5*res.Spare, minWarmCPU) {
		t.Fatalf("Warm with Share 0.5: ok %d, spare %.2f cores, budget %.2f; want 20 answered, a budget of max(half the spare, %.2f)", res.OK, res.Spare, res.CPU, minWarmCPU)
	}
}
