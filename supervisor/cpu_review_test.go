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
