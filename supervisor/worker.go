package supervisor

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/deployer/deployer/internal/account"
	"github.com/deployer/deployer/internal/cgroup"
)

// WorkerState is what a worker is doing.
type WorkerState string

// Worker states.
const (
	Starting WorkerState = "starting" // spawned, not yet up for min_uptime
	Running  WorkerState = "running"
	Backoff  WorkerState = "backoff" // crashed, waiting to restart
	Draining WorkerState = "draining"
	// CrashLoop: the worker keeps crashing (crashLoopAfter restarts or
	// more, none followed by a stable run); shown while it runs and while
	// it waits to restart.
	CrashLoop WorkerState = "crashloop"
	Stopped   WorkerState = "stopped"
)

// WorkerStatus is a snapshot of one worker.
type WorkerStatus struct {
	Index    int         `json:"index"`
	PID      int         `json:"pid"`
	Release  string      `json:"release"`
	State    WorkerState `json:"state"`
	Started  time.Time   `json:"started"`
	Restarts int         `json:"restarts"`
	// KillAt, while the worker drains, is when it gets SIGKILL if it has
	// not exited by then (stop signal + drain_timeout).
	KillAt time.Time `json:"kill_at,omitzero"`
}

// workerSpec is everything a worker needs to run.
type workerSpec struct {
	app, release string
	index        int
	dir, start   string
	env          []string
	sockets      []*Socket
	minUptime    time.Duration
	stopSignal   syscall.Signal
	drainTimeout time.Duration
	restart      bool         // restart on crash once up; false for preflight
	log          io.Writer    // prefixed output goes here
	logger       *slog.Logger // the daemon's log: exits and restarts; nil: none
	notify       *Notifier    // if set, a worker is up only after READY=1
	keeper       FDKeeper     // holds a copy of each output pipe; nil: none
	cgroups      *cgroup.Tree // a cgroup per process; nil: process groups only
	limits       cgroup.Limits
	account      *account.Account // runs the process; nil: the daemon's user
	onChange     func()           // called when the worker's process changes
	quietTail    bool             // its exit error leaves out the last output (preflight reports it apart)
}

// worker runs one process and, if spec.restart, restarts it with backoff.
// Its goroutine run owns every field behind mu; others read snapshots.
type worker struct {
	spec   workerSpec
	stop   chan struct{} // closed to retire the worker
	once   sync.Once
	abrupt atomic.Bool   // set by Kill: retire with SIGKILL, no drain
	detach chan struct{} // closed to let the process go without stopping it
	dOnce  sync.Once
	done   chan struct{} // closed when run has reaped its last process, or let it go
	up     chan error    // gets one value: nil once first up, or why it never came up

	mu     sync.Mutex
	status WorkerStatus
	ticks  uint64 // start time of the current process, for WorkerRecord
	group  string // the current process's cgroup, for WorkerRecord
	// drainSince is when the current process was sent the stop signal, by
	// this daemon or (adopted) a previous one; zero if it was not.
	drainSince time.Time
	note       string // the last STATUS= the worker sent
	err        error  // why the worker stopped on its own
	tail       *tailBuffer
}

func newWorker(spec workerSpec, adopted *process, rec WorkerRecord) *worker {
	w := &worker{
		spec:   spec,
		stop:   make(chan struct{}),
		detach: make(chan struct{}),
		done:   make(chan struct{}),
		up:     make(chan error, 1),
		tail:   &tailBuffer{max: tailLines},
	}
	w.status = WorkerStatus{Index: spec.index, Release: spec.release, State: Starting, Restarts: rec.Restarts}
	if adopted != nil {
		w.ticks, w.group = adopted.started, rec.Cgroup
		w.status.PID, w.status.State, w.status.Started = adopted.pid, Running, time.Now()
		if t, err := time.Parse(time.RFC3339Nano, rec.Draining); err == nil && rec.Draining != "" {
			w.drainSince = t
		}
	}
	go w.run(adopted)
	return w
}

// livePID is the pid of the worker's current process while that process
// runs, 0 once it has exited: its pid may then name a zombie, or another
// process that got it, whose /proc must not be taken for the app's.
func (w *worker) livePID() int {
	w.mu.Lock()
	pid, ticks := w.status.PID, w.ticks
	w.mu.Unlock()
	if pid <= 0 || !sameLiveProcess(pid, ticks) {
		return 0
	}
	return pid
}

func (w *worker) Status() WorkerStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

// record is what a later daemon needs to adopt the worker's process; ok is
// false while it has none.
func (w *worker) record() (WorkerRecord, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.status
	if s.PID == 0 || s.State == Stopped || s.State == Backoff {
		return WorkerRecord{}, false
	}
	r := WorkerRecord{Index: s.Index, PID: s.PID, Started: w.ticks, Restarts: s.Restarts,
		Since: s.Started.UTC().Format(time.RFC3339Nano), Cgroup: w.group}
	if !w.drainSince.IsZero() {
		r.Draining = w.drainSince.UTC().Format(time.RFC3339Nano)
	}
	return r, true
}

func (w *worker) set(f func(*WorkerStatus)) {
	w.mu.Lock()
	f(&w.status)
	w.mu.Unlock()
}

// Retire asks the worker to drain and stop; Done is closed once it has.
func (w *worker) Retire() { w.once.Do(func() { close(w.stop) }) }

// Kill retires the worker without a drain: SIGKILL to its process group
// and cgroup at once. For a preflight instance, which never had live
// traffic: its answer is in, and nothing should wait for its stop.
func (w *worker) Kill() {
	w.abrupt.Store(true)
	w.Retire()
}

// Detach stops supervising the worker and leaves its process running, for
// the next daemon to adopt; Done is closed once it has let go.
func (w *worker) Detach() { w.dOnce.Do(func() { close(w.detach) }) }

func (w *worker) Done() <-chan struct{} { return w.done }

// Err is why the worker stopped on its own, once Done is closed.
func (w *worker) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// crashLoopAfter is the number of restarts, without a stable run between
// them, from which a worker shows as CrashLoop.
const crashLoopAfter = 3

// stableAfter is how long a restarted worker must stay up before its
// backoff starts again from 1s: much longer than min_uptime, which only
// says it started, so that a worker that crashes every few seconds is not
// restarted at once forever (README: crash restarts).
func stableAfter(minUptime time.Duration) time.Duration {
	return max(10*minUptime, stableFloor)
}

// stableFloor is stableAfter's least value; tests shorten it.
var stableFloor = 30 * time.Second

// backoff is 1s × 1.5^n, capped at 30s (README: crash restarts).
func backoff(n int) time.Duration {
	d := time.Second
	for i := 0; i < n && d < 30*time.Second; i++ {
		d = d * 3 / 2
	}
	return min(d, 30*time.Second)
}

// event tells the daemon's log about the worker, if it has one.
func (w *worker) event(level slog.Level, msg string, args ...any) {
	if w.spec.logger == nil {
		return
	}
	w.spec.logger.Log(context.Background(), level, msg,
		append([]any{"app", w.spec.app, "release", w.spec.release, "worker", w.spec.index}, args...)...)
}

func (w *worker) changed() {
	if w.spec.onChange != nil {
		w.spec.onChange()
	}
}

// run supervises the worker: adopted, if set, is a process a previous daemon
// started, already up; otherwise run spawns one.
func (w *worker) run(adopted *process) {
	if !w.spec.restart {
		// A preflight instance dies with the daemon (Pdeathsig), which is
		// tied to the thread that forked it: keep that thread for the life
		// of the child. Never unlocked, so the thread is discarded with run.
		// Live workers have no Pdeathsig: they outlive the daemon.
		runtime.LockOSThread()
	}
	defer close(w.done)
	everUp := false
	crashes := w.status.Restarts
	for {
		var proc *process
		wasAdopted := adopted != nil
		if wasAdopted {
			proc, adopted = adopted, nil
			w.adopted(proc)
			everUp = true
			w.up <- nil
		} else {
			var err error
			if proc, err = w.startOnce(); err != nil {
				w.fail(err, everUp)
				return
			}
			if everUp {
				w.event(slog.LevelInfo, "worker restarted", "pid", proc.pid, "restarts", w.Status().Restarts)
			}
		}
		w.changed()
		switch w.supervise(proc, wasAdopted, &everUp, &crashes) {
		case next:
			continue
		default:
			return
		}
	}
}

// outcome is how supervise left a process.
type outcome int

const (
	next outcome = iota // it crashed and the backoff passed: start another
	end                 // the worker is finished
)

// supervise waits on one process until it is up, exits, or the worker is
// retired or detached. An adopted process is up already.
func (w *worker) supervise(proc *process, adopted bool, everUp *bool, crashes *int) outcome {
	upTimer := time.NewTimer(w.spec.minUptime)
	defer upTimer.Stop()
	stable := time.NewTimer(stableAfter(w.spec.minUptime))
	defer stable.Stop()
	var msgs chan string
	ready := w.spec.notify == nil || adopted
	uptimeDone := adopted
	if w.spec.notify != nil {
		msgs = make(chan string, 16)
		cg := ""
		if proc.cgroup != nil {
			cg = proc.cgroup.Path()
		}
		w.spec.notify.register(proc.pid, cg, msgs)
	}
	for {
		var becameUp bool
		select {
		case m := <-msgs:
			switch {
			case m == "READY=1":
				if !ready {
					ready = true
					becameUp = uptimeDone
				}
			case strings.HasPrefix(m, "STATUS="):
				w.mu.Lock()
				w.note = strings.TrimPrefix(m, "STATUS=")
				w.mu.Unlock()
			}
		case <-upTimer.C:
			if !uptimeDone {
				uptimeDone = true
				becameUp = ready
			}
		case <-stable.C:
			if *crashes > 0 && uptimeDone && ready {
				w.event(slog.LevelInfo, "worker stable again: backoff reset", "pid", proc.pid, "restarts", w.Status().Restarts)
				*crashes = 0
				w.set(func(s *WorkerStatus) {
					if s.State == CrashLoop {
						s.State = Running
					}
				})
			}
		case st := <-proc.exit:
			w.unregister(proc.pid)
			signalGroup(proc.pid, syscall.SIGKILL) // leftovers of the group
			w.letGo(proc, true)
			if !*everUp || !w.spec.restart {
				tail := w.tail.describe()
				if w.spec.quietTail {
					tail = ""
				}
				w.fail(fmt.Errorf("worker %d exited (%s)%s", w.spec.index, st, tail), *everUp)
				w.changed()
				return end
			}
			wait := backoff(*crashes)
			fmt.Fprintf(w.spec.log, "[%s w%d] exited (%s), restarting in %s\n",
				w.spec.release, w.spec.index, st, wait)
			w.event(slog.LevelWarn, "worker exited unexpectedly", "pid", proc.pid, "status", st,
				"restart_in", wait.String(), "restarts", w.Status().Restarts)
			w.changed()
			if !w.sleep(wait, *crashes+1 >= crashLoopAfter) {
				w.set(func(s *WorkerStatus) { s.State = Stopped })
				return end
			}
			*crashes++
			w.set(func(s *WorkerStatus) { s.Restarts++ })
			return next
		case <-w.stop:
			if !w.drain(proc) {
				w.unregister(proc.pid)
				w.letGo(proc, false) // detached mid-drain: the next daemon finishes it
				return end
			}
			w.unregister(proc.pid)
			w.letGo(proc, true)
			if !*everUp {
				w.up <- fmt.Errorf("worker %d: stopped before it was up", w.spec.index)
			}
			w.changed()
			return end
		case <-w.detach:
			w.unregister(proc.pid)
			w.letGo(proc, false)
			if !*everUp {
				w.up <- fmt.Errorf("worker %d: detached before it was up", w.spec.index)
			}
			return end
		}
		if becameUp {
			state := Running
			if *crashes >= crashLoopAfter {
				state = CrashLoop
			}
			w.set(func(s *WorkerStatus) { s.State = state })
			if !*everUp {
				*everUp = true
				w.up <- nil
			}
		}
	}
}

// adopted starts copying an adopted process's output, if its pipe was kept.
func (w *worker) adopted(proc *process) {
	if proc.out != nil {
		w.copyOutput(proc)
	} else {
		proc.copied = closedChan
	}
}

// letGo closes our side of the process's output. gone says the process is
// gone for good, so the keeper's copy of the pipe is dropped too; otherwise
// (detach) the keeper keeps it for the next daemon.
func (w *worker) letGo(proc *process, gone bool) {
	if gone {
		w.removeGroup(proc)
		waitOutput(proc.copied)
	} else if proc.cgroup != nil {
		proc.cgroup.Close() // the group stays, for the next daemon
	}
	if proc.out != nil {
		proc.out.Close()
	}
	if !gone {
		// What the relay has read is no longer in the pipe for the next
		// daemon: it must be in the log before the process is let go
		// (the daemon may exit next). The close ends its read.
		waitOutput(proc.copied)
	}
	if !gone && proc.release != nil {
		proc.release()
	}
	if gone && w.spec.keeper != nil && proc.outName != "" {
		w.spec.keeper.Del(proc.outName)
	}
}

// removeGroup kills whatever is left in the process's cgroup (a child that
// left its process group) and removes the group.
func (w *worker) removeGroup(proc *process) {
	if proc.cgroup == nil {
		return
	}
	if err := proc.cgroup.Remove(); err != nil {
		fmt.Fprintf(w.spec.log, "[%s w%d] %v\n", w.spec.release, w.spec.index, err)
	}
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

func (w *worker) unregister(pid int) {
	if w.spec.notify != nil {
		w.spec.notify.unregister(pid)
	}
}

// sleep waits d unless the worker is retired or detached first, shown as
// Backoff, or CrashLoop if looping.
func (w *worker) sleep(d time.Duration, looping bool) bool {
	state := Backoff
	if looping {
		state = CrashLoop
	}
	w.set(func(s *WorkerStatus) { s.State = state })
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.stop:
		return false
	case <-w.detach:
		return false
	}
}

func (w *worker) fail(err error, everUp bool) {
	w.mu.Lock()
	w.status.State, w.err = Stopped, err
	w.mu.Unlock()
	if !everUp {
		w.up <- err
	}
}

// startOnce spawns the process with its output on a pipe the daemon reads,
// a copy of whose read end the keeper holds: if the daemon dies, the worker
// can still write (no EPIPE) and the next daemon takes the pipe back.
func (w *worker) startOnce() (*process, error) {
	r, wr, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("worker %d: %w", w.spec.index, err)
	}
	growPipe(r)
	g := w.newGroup()
	pid, err := spawn(procSpec{
		dir:           w.spec.dir,
		argv:          []string{"/bin/sh", "-c", workerScript(w.spec.start)},
		env:           w.spec.env,
		sockets:       w.spec.sockets,
		out:           wr,
		dieWithDaemon: !w.spec.restart,
		cgroup:        g,
		cred:          w.spec.account.Credential(),
	})
	wr.Close()
	if err != nil {
		r.Close()
		if g != nil {
			_ = g.Remove()
		}
		return nil, fmt.Errorf("worker %d: %w", w.spec.index, err)
	}
	ticks, _ := startTicks(pid) // before Wait: the process exists, if only as a zombie
	osProc, err := os.FindProcess(pid)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("worker %d: %w", w.spec.index, err)
	}
	proc := &process{pid: pid, started: ticks, out: r, cgroup: g, kill: func() { _ = osProc.Kill() }}
	if w.spec.keeper != nil && w.spec.restart {
		proc.outName = OutputName(w.spec.app, pid)
		if err := putFile(w.spec.keeper, proc.outName, r); err != nil {
			fmt.Fprintf(w.spec.log, "[%s w%d] output pipe not kept outside the daemon: %v\n", w.spec.release, w.spec.index, err)
			proc.outName = ""
		}
	}
	w.mu.Lock()
	w.ticks, w.group, w.drainSince = ticks, "", time.Time{}
	if g != nil {
		w.group = g.Name
	}
	w.status.PID, w.status.Started, w.status.State = pid, time.Now(), Starting
	w.mu.Unlock()
	w.copyOutput(proc)
	exited := make(chan string, 1)
	go func() {
		st, err := osProc.Wait()
		if err != nil {
			exited <- err.Error()
			return
		}
		exited <- st.String()
	}()
	proc.exit = exited
	return proc, nil
}

// groupSeq tells apart the cgroups of a worker's successive processes.
var groupSeq atomic.Int64

// newGroup makes the cgroup of the worker's next process, or returns nil
// (process groups only) where cgroups are not used or cannot be made.
func (w *worker) newGroup() *cgroup.Group {
	if w.spec.cgroups == nil {
		return nil
	}
	name := fmt.Sprintf("%s/%s-w%d-%d", w.spec.app, strings.ReplaceAll(w.spec.release, " ", "-"), w.spec.index, groupSeq.Add(1))
	g, err := w.spec.cgroups.New(name)
	if err != nil {
		fmt.Fprintf(w.spec.log, "[%s w%d] no cgroup, process group only: %v\n", w.spec.release, w.spec.index, err)
		return nil
	}
	if err := g.Limit(w.spec.limits); err != nil && !errors.Is(err, cgroup.ErrNotEnforced) {
		fmt.Fprintf(w.spec.log, "[%s w%d] limits: %v\n", w.spec.release, w.spec.index, err)
	}
	return g
}

// copyOutput copies the process's output to the log, each line prefixed,
// until the pipe ends or we close our side of it.
func (w *worker) copyOutput(proc *process) {
	done := make(chan struct{})
	proc.copied = done
	go func() {
		defer close(done)
		prefix := fmt.Sprintf("[%s w%d %d] ", w.spec.release, w.spec.index, proc.pid)
		relayOutput(proc.out, w.spec.log, prefix, w.tail)
	}()
}

// relayLinger is how long the relay lets a slow trickle of output gather
// in the pipe before it reads again, and relaySmall what counts as a
// trickle. An access log flushed line by line would otherwise cost a
// read, a prefixed write and two wake-ups per line; gathered, it costs
// that per batch. Output reaches the log at most relayLinger later.
const (
	relayLinger = 20 * time.Millisecond
	relaySmall  = 4096
	relayBuffer = 64 * 1024 // also the longest line: a longer one is cut into pieces
)

// relayOutput copies r to log line by line, each line prefixed, in one
// write per read, keeping the last lines in tail, until r ends.
func relayOutput(r io.Reader, log io.Writer, prefix string, tail *tailBuffer) {
	buf := make([]byte, relayBuffer)
	var out []byte
	held := 0 // bytes of an unfinished line at the start of buf
	emit := func(line []byte) {
		tail.add(string(line))
		out = append(out, prefix...)
		out = append(out, line...)
		out = append(out, '\n')
	}
	for {
		n, err := r.Read(buf[held:])
		held += n
		out = out[:0]
		start := 0
		for {
			i := bytes.IndexByte(buf[start:held], '\n')
			if i < 0 {
				break
			}
			emit(buf[start : start+i])
			start += i + 1
		}
		if start == 0 && held == len(buf) || err != nil && held > start {
			emit(buf[start:held]) // a line too long for the buffer, or the last one, unfinished
			start = held
		}
		held = copy(buf, buf[start:held])
		if len(out) > 0 {
			_, _ = log.Write(out)
		}
		if err != nil {
			return
		}
		if n < relaySmall {
			time.Sleep(relayLinger)
		}
	}
}

// waitOutput gives the output copier a moment to take the last lines after
// the group was killed; a process that left the group may hold the pipe
// open, so it is bounded.
func waitOutput(copied <-chan struct{}) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-copied:
	case <-t.C:
	}
}

// drain sends the stop signal to the worker's group, waits drainTimeout,
// then kills the group; the process is always reaped (or, adopted, seen
// gone). It returns false if the worker was detached before that: the
// process is left draining, for the next daemon. A process a previous
// daemon already sent the stop signal is not sent it again (a second one
// forces the drain): it gets what is left of drainTimeout.
func (w *worker) drain(proc *process) bool {
	if w.abrupt.Load() {
		signalGroup(proc.pid, syscall.SIGKILL)
		proc.kill()
		if proc.cgroup != nil {
			_ = proc.cgroup.Kill()
		}
		<-proc.exit
		w.set(func(s *WorkerStatus) { s.State = Stopped })
		return true
	}
	w.mu.Lock()
	since := w.drainSince
	w.mu.Unlock()
	timeout := w.spec.drainTimeout
	if since.IsZero() {
		signalGroup(proc.pid, w.spec.stopSignal)
		since = time.Now()
		w.mu.Lock()
		w.drainSince = since
		w.mu.Unlock()
		w.changed() // saved, so that the next daemon does not signal it again
	} else {
		timeout = max(0, timeout-time.Since(since))
	}
	w.set(func(s *WorkerStatus) { s.State, s.KillAt = Draining, since.Add(w.spec.drainTimeout) })
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-proc.exit:
	case <-w.detach:
		return false
	case <-t.C:
		fmt.Fprintf(w.spec.log, "[%s w%d] did not stop within %s: SIGKILL\n",
			w.spec.release, w.spec.index, w.spec.drainTimeout)
		signalGroup(proc.pid, syscall.SIGKILL)
		proc.kill() // in case it left its group
		if proc.cgroup != nil {
			_ = proc.cgroup.Kill()
		}
		<-proc.exit
	}
	signalGroup(proc.pid, syscall.SIGKILL)
	w.set(func(s *WorkerStatus) { s.State, s.KillAt = Stopped, time.Time{} })
	return true
}

// tailBuffer keeps the last lines a worker printed, to explain a failure.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
}

// tailWidth bounds each line the tail keeps: it explains a failure in an
// error, the ledger and the pusher's output, where a 64 KiB line of base64
// would drown the rest.
const tailWidth = 512

func (t *tailBuffer) add(line string) {
	if len(line) > tailWidth {
		line = strings.ToValidUTF8(line[:tailWidth], "") + "…"
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[1:]
	}
}

// tailLines is how many of its last lines a worker keeps, and
// describeLines how many of those an error names.
const tailLines, describeLines = 20, 8

func (t *tailBuffer) describe() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return ""
	}
	return "; last output: " + strings.Join(t.lines[max(0, len(t.lines)-describeLines):], " | ")
}

// all returns the lines kept, oldest first.
func (t *tailBuffer) all() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.lines...)
}
