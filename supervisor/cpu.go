package supervisor

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The warm-up's CPU budget. A warm-up that sends as fast as green answers
// takes every core it can: a cold worker costs several times what a warm
// one does per request, and its JIT compiles on threads of its own. Under
// an open load that already uses half the machine, that pushed demand past
// capacity, and the live requests queued behind it for up to 0.5 s
// (docs/BENCHMARKS.md). So the warm-up is paced: green's processes may use
// no more than a share of the CPU that was idle while green started.

// clockTick is the unit of /proc's CPU times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// minWarmCPU is the least CPU, in cores, a paced warm-up may use, so that
// it moves on a saturated machine too (it is bounded by health.timeout).
const minWarmCPU = 0.25

// warmBurst is how far ahead of its budget a paced warm-up may get.
const warmBurst = 20 * time.Millisecond

// idleSample is the machine's idle CPU time so far, all CPUs, from the
// first line of /proc/stat.
type idleSample struct {
	idle time.Duration
	ok   bool
}

func sampleIdle() idleSample {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return idleSample{}
	}
	return parseIdle(b)
}

// parseIdle is sampleIdle's reading of /proc/stat's text b.
func parseIdle(b []byte) idleSample {
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 6 || f[0] != "cpu" { // iowait, the 6th, is missing before Linux 2.6
		return idleSample{}
	}
	var s idleSample
	for _, v := range f[4:6] { // idle and iowait, after "cpu", user, nice and system
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return idleSample{}
		}
		s.idle += time.Duration(n) * clockTick
	}
	s.ok = true
	return s
}

// spareCPU is how many cores were idle between from and to, counting as
// idle what used, the CPU the pool's own processes took meanwhile (its
// workers booting), which the warm-up replaces.
func spareCPU(from, to idleSample, wall, used time.Duration) float64 {
	if !from.ok || !to.ok || wall <= 0 {
		return 0
	}
	return float64(to.idle-from.idle+used) / float64(wall)
}

// cpuTime is the CPU time process pid has used, all its threads, or 0.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The fields after the command, which is in parentheses and may hold
	// anything: utime and stime are the 14th and 15th of the line.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(u+s) * clockTick
}

// cpuTime is the CPU time the pool's processes have used so far (those
// still running: what an exited one used is not counted).
func (p *Pool) cpuTime() time.Duration {
	var sum time.Duration
	for _, w := range p.workers {
		if g := w.cgroupUsage(); g >= 0 {
			sum += g
			continue
		}
		for _, pid := range w.procs() {
			sum += cpuTime(pid)
		}
	}
	return sum
}

// pacer holds a warm-up to a CPU budget: cores of CPU, as measured by used.
type pacer struct {
	cores float64
	used  func() time.Duration
	start time.Time
	base  time.Duration

	mu       sync.Mutex
	readAt   time.Time     // when used was last read,
	lastUsed time.Duration // and what it said
}

func newPacer(cores float64, used func() time.Duration) *pacer {
	u := used()
	return &pacer{cores: cores, used: used, start: time.Now(), base: u, lastUsed: u}
}

// spent is what was used since the start, read at most once a millisecond:
// every request of the warm-up asks. It never goes down: where used does
// (a process of the pool exited, a worker restarted: what it used left the
// pool's sum), the base goes down with it, so that CPU spent is not handed
// out again as budget.
func (pc *pacer) spent() time.Duration {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if time.Since(pc.readAt) >= time.Millisecond {
		u := pc.used()
		if u < pc.lastUsed {
			pc.base -= pc.lastUsed - u
		}
		pc.readAt, pc.lastUsed = time.Now(), u
	}
	return pc.lastUsed - pc.base
}

// wait returns once what was used since the start is within the budget
// (plus warmBurst), or ctx ends.
func (pc *pacer) wait(ctx context.Context) {
	for {
		over := pc.spent() - time.Duration(pc.cores*float64(time.Since(pc.start))) - warmBurst
		if over <= 0 {
			return
		}
		// The time the budget takes to cover what is over, in steps that
		// follow the CPU clock's tick.
		d := min(max(time.Duration(float64(over)/pc.cores), time.Millisecond), 50*time.Millisecond)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
