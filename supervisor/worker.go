package supervisor

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// WorkerState is what a worker is doing.
type WorkerState string

// Worker states.
const (
	Starting WorkerState = "starting" // spawned, not yet up for min_uptime
	Running  WorkerState = "running"
	Backoff  WorkerState = "backoff" // crashed, waiting to restart
	Draining WorkerState = "draining"
	Stopped  WorkerState = "stopped"
)

// WorkerStatus is a snapshot of one worker.
type WorkerStatus struct {
	Index    int         `json:"index"`
	PID      int         `json:"pid"`
	Release  string      `json:"release"`
	State    WorkerState `json:"state"`
	Started  time.Time   `json:"started"`
	Restarts int         `json:"restarts"`
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
	restart      bool      // restart on crash once up; false for preflight
	log          io.Writer // prefixed output goes here
	notify       *Notifier // if set, a worker is up only after READY=1
}

// worker runs one process and, if spec.restart, restarts it with backoff.
// Its goroutine run owns every field behind mu; others read snapshots.
type worker struct {
	spec workerSpec
	stop chan struct{} // closed to retire the worker
	once sync.Once
	done chan struct{} // closed when run has reaped its last process
	up   chan error    // gets one value: nil once first up, or why it never came up

	mu     sync.Mutex
	status WorkerStatus
	note   string // the last STATUS= the worker sent
	err    error  // why the worker stopped on its own
	tail   *tailBuffer
}

func newWorker(spec workerSpec) *worker {
	w := &worker{
		spec: spec,
		stop: make(chan struct{}),
		done: make(chan struct{}),
		up:   make(chan error, 1),
		tail: &tailBuffer{max: 8},
	}
	w.status = WorkerStatus{Index: spec.index, Release: spec.release, State: Starting}
	go w.run()
	return w
}

func (w *worker) Status() WorkerStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

func (w *worker) set(f func(*WorkerStatus)) {
	w.mu.Lock()
	f(&w.status)
	w.mu.Unlock()
}

// Retire asks the worker to drain and stop; Done is closed once it has.
func (w *worker) Retire() { w.once.Do(func() { close(w.stop) }) }

func (w *worker) Done() <-chan struct{} { return w.done }

// Err is why the worker stopped on its own, once Done is closed.
func (w *worker) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// backoff is 1s × 1.5^n, capped at 30s (SPEC §4).
func backoff(n int) time.Duration {
	d := time.Second
	for i := 0; i < n && d < 30*time.Second; i++ {
		d = d * 3 / 2
	}
	return min(d, 30*time.Second)
}

func (w *worker) run() {
	// Pdeathsig is tied to this thread: keep it for the life of every child
	// it forks. Never unlocked, so the thread is discarded when run ends.
	runtime.LockOSThread()
	defer close(w.done)
	everUp := false
	crashes := 0
	for {
		exit, copied, proc, err := w.startOnce()
		if err != nil {
			w.fail(err, everUp)
			return
		}
		upTimer := time.NewTimer(w.spec.minUptime)
		var msgs chan string
		ready := w.spec.notify == nil
		if !ready {
			msgs = make(chan string, 16)
			w.spec.notify.register(proc.Pid, msgs)
		}
		uptimeDone := false
	wait:
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
				uptimeDone = true
				becameUp = ready
			case st := <-exit:
				upTimer.Stop()
				w.unregister(proc.Pid)
				signalGroup(proc.Pid, syscall.SIGKILL) // leftovers of the group
				waitOutput(copied)
				if !everUp || !w.spec.restart {
					w.fail(fmt.Errorf("worker %d exited (%s)%s", w.spec.index, st, w.tail.describe()), everUp)
					return
				}
				fmt.Fprintf(w.spec.log, "[%s w%d] exited (%s), restarting in %s\n",
					w.spec.release, w.spec.index, st, backoff(crashes))
				if !w.sleep(backoff(crashes)) {
					w.set(func(s *WorkerStatus) { s.State = Stopped })
					return
				}
				crashes++
				w.set(func(s *WorkerStatus) { s.Restarts++ })
				break wait
			case <-w.stop:
				upTimer.Stop()
				w.drain(proc, exit)
				w.unregister(proc.Pid)
				waitOutput(copied)
				if !everUp {
					w.up <- fmt.Errorf("worker %d: stopped before it was up", w.spec.index)
				}
				return
			}
			if becameUp {
				crashes = 0
				w.set(func(s *WorkerStatus) { s.State = Running })
				if !everUp {
					everUp = true
					w.up <- nil
				}
			}
		}
	}
}

func (w *worker) unregister(pid int) {
	if w.spec.notify != nil {
		w.spec.notify.unregister(pid)
	}
}

// sleep waits d unless the worker is retired first.
func (w *worker) sleep(d time.Duration) bool {
	w.set(func(s *WorkerStatus) { s.State = Backoff })
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-w.stop:
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

// startOnce spawns the process and returns a channel that receives its exit.
func (w *worker) startOnce() (exit <-chan *os.ProcessState, copied <-chan struct{}, _ *os.Process, _ error) {
	r, wr, err := os.Pipe()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("worker %d: %w", w.spec.index, err)
	}
	proc, err := spawn(procSpec{
		dir:     w.spec.dir,
		argv:    []string{"/bin/sh", "-c", workerScript(w.spec.start)},
		env:     w.spec.env,
		sockets: w.spec.sockets,
		out:     wr,
	})
	wr.Close()
	if err != nil {
		r.Close()
		return nil, nil, nil, fmt.Errorf("worker %d: %w", w.spec.index, err)
	}
	w.set(func(s *WorkerStatus) { s.PID, s.Started, s.State = proc.Pid, time.Now(), Starting })
	prefix := fmt.Sprintf("[%s w%d %d] ", w.spec.release, w.spec.index, proc.Pid)
	copyDone := make(chan struct{})
	go func() {
		defer close(copyDone)
		defer r.Close()
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64*1024), 1024*1024)
		for sc.Scan() {
			w.tail.add(sc.Text())
			fmt.Fprintf(w.spec.log, "%s%s\n", prefix, sc.Text())
		}
	}()
	exited := make(chan *os.ProcessState, 1)
	go func() {
		st, _ := proc.Wait()
		exited <- st
	}()
	return exited, copyDone, proc, nil
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
// then kills the group; the process is always reaped.
func (w *worker) drain(proc *os.Process, exit <-chan *os.ProcessState) {
	w.set(func(s *WorkerStatus) { s.State = Draining })
	signalGroup(proc.Pid, w.spec.stopSignal)
	t := time.NewTimer(w.spec.drainTimeout)
	defer t.Stop()
	select {
	case <-exit:
	case <-t.C:
		fmt.Fprintf(w.spec.log, "[%s w%d] did not stop within %s: SIGKILL\n",
			w.spec.release, w.spec.index, w.spec.drainTimeout)
		signalGroup(proc.Pid, syscall.SIGKILL)
		_ = proc.Kill() // in case it left its group
		<-exit
	}
	signalGroup(proc.Pid, syscall.SIGKILL)
	w.set(func(s *WorkerStatus) { s.State = Stopped })
}

// tailBuffer keeps the last lines a worker printed, to explain a failure.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[1:]
	}
}

func (t *tailBuffer) describe() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return ""
	}
	return "; last output: " + strings.Join(t.lines, " | ")
}
