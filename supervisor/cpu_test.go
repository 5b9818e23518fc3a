package supervisor

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
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

// A worker of the pool that exits mid warm-up takes what it used out of
// the pool's sum: that CPU was spent all the same, and the pacer must not
// hand it out again as budget (the warm-up then ran unpaced until the sum
// caught up).
func TestPacerHoldsTheBudgetWhenAWorkerRestarts(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, helperStart(t), 2)
	spec.Env["HELPER_BURN"] = "4ms"
	green := startPool(t, spec)
	// Both workers spend CPU, unpaced, before the pacer starts.
	if r := warm(context.Background(), Warmup{Addr: ss[0].LocalAddr(), Path: "/", Conns: 4, Requests: 200, Limit: time.Minute},
		len(green.workers), green.connOwner, nil); r.OK != 200 {
		t.Fatalf("ok %d of 200, first failure %v", r.OK, r.First)
	}
	pc := newPacer(minWarmCPU, green.cpuTime)
	pc.wait(context.Background())

	// Worker 0 crashes (it is restarted after its backoff, 1 s, while
	// worker 1 answers the warm-up).
	if err := syscall.Kill(green.workers[0].Status().PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for pc.base-green.cpuTime() < 150*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("worker 0's CPU still counted 5s after its end: %s of %s", green.cpuTime(), pc.base)
		}
		time.Sleep(time.Millisecond)
	}

	from, t0 := green.cpuTime(), time.Now()
	r := warm(context.Background(), Warmup{Addr: ss[0].LocalAddr(), Path: "/", Conns: 4, Requests: 150, Limit: time.Minute},
		0, nil, pc)
	used := green.cpuTime() - from
	if r.OK != 150 {
		t.Fatalf("ok %d of 150, first failure %v", r.OK, r.First)
	}
	// What the budget gave since the pacer started, and no more (the
	// burst, what the last requests let through, the clock's tick).
	budget := time.Duration(minWarmCPU*float64(time.Since(pc.start))) + warmBurst + 8*10*time.Millisecond + 2*clockTick
	t.Logf("after the crash: %s of CPU in %s (budget %s)", used, time.Since(t0), budget)
	if used > budget {
		t.Fatalf("the pool used %s since the crash, over the budget of %.2f cores since the pacer started (%s): the exited worker's CPU was handed out again", used, minWarmCPU, budget)
	}
}

// /proc/stat's first line: idle and iowait are the 5th and 6th fields; a
// line without iowait (before Linux 2.6) is no sample, not a panic.
func TestParseIdleFields(t *testing.T) {
	s := parseIdle([]byte("cpu  10 20 30 400 5 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"))
	if !s.ok || s.idle != 405*clockTick {
		t.Fatalf("parseIdle = %+v; want %s", s, 405*clockTick)
	}
	for _, b := range []string{"cpu 1 2 3 4\n", "cpu 1 2 3\n", "intr 1 2 3 4 5 6\n", "", "cpu 1 2 3 x 5\n"} {
		if s := parseIdle([]byte(b)); s.ok {
			t.Fatalf("parseIdle(%q) = %+v; want no sample", b, s)
		}
	}
}

// cpuTime reads utime and stime after the last ')' of /proc/PID/stat: a
// command name with spaces and parentheses of its own does not shift them.
func TestCPUTimeOfAProcessWithAStrangeName(t *testing.T) {
	cmd := exec.Command("sh", "-c", `printf 'a) b ) (c' > /proc/self/comm && while :; do :; done`)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		if d := cpuTime(pid); strings.TrimSpace(string(comm)) == "a) b ) (c" && d >= 100*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %q: cpuTime %s after 5s of busy loop", comm, cpuTime(pid))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if d := cpuTime(pid); d > 10*time.Second {
		t.Fatalf("cpuTime %s: a field that is not utime+stime", d)
	}
}
