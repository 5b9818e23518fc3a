package supervisor

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// memKeeper is an FDKeeper in this process: enough to test that the pools
// hand their pipes over and take them back.
type memKeeper struct {
	mu  sync.Mutex
	fds map[string]int
}

func (k *memKeeper) Put(name string, fd int) error {
	dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.fds[name] = dup
	return nil
}

func (k *memKeeper) Del(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if fd, ok := k.fds[name]; ok {
		unix.Close(fd)
		delete(k.fds, name)
	}
}

func (k *memKeeper) output(app string) func(pid int) *os.File {
	return func(pid int) *os.File {
		k.mu.Lock()
		defer k.mu.Unlock()
		fd, ok := k.fds[OutputName(app, pid)]
		if !ok {
			return nil
		}
		dup, _ := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		return os.NewFile(uintptr(dup), "out")
	}
}

func pidsOf(p *Pool) []int {
	var out []int
	for _, w := range p.Status() {
		out = append(out, w.PID)
	}
	slices.Sort(out)
	return out
}

func running(pid int) bool {
	st, err := startTicks(pid)
	return err == nil && st != 0 && syscall.Kill(pid, 0) == nil
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDetachedWorkersKeepServingAndAreAdoptedByTheirRecords(t *testing.T) {
	ss := testSockets(t)
	k := &memKeeper{fds: map[string]int{}}
	spec := testSpec(t, ss, helperStart(t), 2)
	spec.Keeper = k
	p := startPool(t, spec)
	pids := pidsOf(p)
	recs := p.Records()
	if len(recs) != 2 || recs[0].Started == 0 {
		t.Fatalf("records %+v", recs)
	}
	if len(k.fds) != 2 {
		t.Fatalf("the keeper holds %d output pipes, want 2", len(k.fds))
	}
	p.Detach()
	for _, pid := range pids {
		if !running(pid) {
			t.Fatalf("worker %d stopped when its pool was detached", pid)
		}
	}
	if _, err := get(t, ss[0].LocalAddr()); err != nil {
		t.Fatalf("detached workers do not serve: %v", err)
	}

	adopted, err := AdoptPool(spec, recs, k.output("t"), true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(adopted.Stop)
	if got := pidsOf(adopted); !slices.Equal(got, pids) {
		t.Fatalf("adopted %v, want %v", got, pids)
	}
	for _, w := range adopted.Status() {
		if w.State != Running {
			t.Fatalf("adopted worker %+v is not running", w)
		}
	}
	// A crash of an adopted worker is seen through its pidfd and restarted.
	syscall.Kill(pids[0], syscall.SIGKILL)
	waitUntil(t, "the crashed adopted worker to be replaced", func() bool {
		got := pidsOf(adopted)
		return !slices.Contains(got, pids[0]) && !slices.Contains(got, 0)
	})
	adopted.Stop()
	for _, pid := range pidsOf(adopted) {
		if running(pid) {
			t.Fatalf("worker %d outlived Stop", pid)
		}
	}
	if running(pids[1]) {
		t.Fatalf("adopted worker %d outlived Stop", pids[1])
	}
	if len(k.fds) != 0 {
		t.Fatalf("the keeper still holds %d pipes of stopped workers", len(k.fds))
	}
}

func TestARecycledPidIsNeverAdopted(t *testing.T) {
	ss := testSockets(t)
	p := startPool(t, testSpec(t, ss, helperStart(t), 1))
	rec := p.Records()[0]
	rec.Started++ // the same pid, another process
	if _, err := AdoptPool(testSpec(t, ss, helperStart(t), 1), []WorkerRecord{rec}, func(int) *os.File { return nil }, true); !errors.Is(err, ErrNotAdoptable) {
		t.Fatalf("adopted a process with another start time: %v", err)
	}
	if !running(rec.PID) {
		t.Fatal("the refused adoption touched the process")
	}
}

// TestAForgedRecordOfAnotherProcessIsNeverAdopted: a workers.json that
// names another process of the daemon's user, with its true start time, is
// refused: that process is not a worker of the app's release.
func TestAForgedRecordOfAnotherProcessIsNeverAdopted(t *testing.T) {
	ss := testSockets(t)
	other := exec.Command("sleep", "60")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	ticks, err := startTicks(other.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	forged := []WorkerRecord{{Index: 0, PID: other.Process.Pid, Started: ticks}}
	if _, err := AdoptPool(testSpec(t, ss, helperStart(t), 1), forged, func(int) *os.File { return nil }, true); !errors.Is(err, ErrNotAdoptable) {
		t.Fatalf("adopted a process that is not a worker: %v", err)
	}
	if !running(other.Process.Pid) {
		t.Fatal("the refused adoption touched the process")
	}
	if got := sane([]WorkerRecord{{Index: 0}, {Index: 0}, {Index: 5}, {Index: 1}}, 2); len(got) != 2 {
		t.Fatalf("sane kept %v, want one record per index below 2", got)
	}
}

// TestAPoolAdoptedToBeRetiredStartsNoWorkerForThoseGone: a draining pool
// whose worker 0 ended its drain while no daemon ran is adopted with its
// worker 1 only; no process of its release is started again on the app's
// sockets.
func TestAPoolAdoptedToBeRetiredStartsNoWorkerForThoseGone(t *testing.T) {
	ss := testSockets(t)
	spec := testSpec(t, ss, helperStart(t), 2)
	p := startPool(t, spec)
	recs := p.Records()
	p.Detach()
	syscall.Kill(recs[0].PID, syscall.SIGKILL)
	waitUntil(t, "worker 0 to be gone", func() bool { return !running(recs[0].PID) })

	adopted, err := AdoptPool(spec, recs, func(int) *os.File { return nil }, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(adopted.Stop)
	if got := pidsOf(adopted); !slices.Equal(got, []int{recs[1].PID}) {
		t.Fatalf("adopted to be retired: workers %v, want only the one left, %d", got, recs[1].PID)
	}
	adopted.Stop()
	if running(recs[1].PID) {
		t.Fatalf("worker %d outlived Stop", recs[1].PID)
	}
}
