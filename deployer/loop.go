package deployer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/deployer/deployer/config"
	"github.com/deployer/deployer/supervisor"
)

// Each app has one goroutine, its loop, that owns its state: the config and
// sockets, the live pool, the green one starting and those draining (which
// it saves to workers.json at every change), the operation holding the app's
// turn (the "deploy lock" users see), the queue of operations waiting for
// it, and the running health.watch. Everything else sends it requests.
//
// An operation (deploy, rollback, reload, cleanup, config reload, automatic
// rollback, the start at daemon start) runs in a goroutine the loop starts
// and tracks, so that the loop keeps answering cancel and close while a
// deploy builds for minutes. The operation changes app state only by asking
// the loop: show a green pool starting, swap it in (with the config it
// runs), list a pool as draining or drained, start or end the watch. Status is read from the snapshot the loop
// publishes after every change, and never waits for the loop.

// op is one operation taking the app's turn.
type op struct {
	what       string // for the holder line: "deploy of abc1234 pushed by alice"
	cancelable bool   // deployer cancel may stop it (close always does)
	run        func(j *job) error
	pr         *progress

	started chan struct{} // closed when the loop starts it
	queued  chan string   // the holder, when the op has to wait its turn
	result  chan error    // its outcome, or ErrClosed if it never ran
}

type withdrawal struct {
	op    *op
	reply chan bool // true: taken out of the queue; false: it started or ended
}

type cancelRequest struct {
	by    string
	reply chan cancelReply
}

type cancelReply struct {
	holder string
	err    error
}

// closeRequest stops the app for good: the running operation is cancelled,
// waiting ones get ErrClosed, then every pool drains and the sockets close.
// With detach, for a handover to a new daemon, the running operation is
// waited for rather than cancelled, and the workers and sockets are let go
// of, not stopped: workers.json tells the next daemon what to adopt.
type closeRequest struct {
	by     string
	detach bool
}

type finished struct {
	op  *op
	err error
}

// swapRequest makes green the live pool (and no longer the starting one),
// running with cfg and sockets; the pool it replaces is sent back, listed as
// draining until the operation reports it stopped. A nil green changes only
// the config.
type swapRequest struct {
	green   pool
	cfg     *config.App
	sockets []*supervisor.Socket
	reply   chan pool
}

// snapshot is what the loop publishes for readers that must not wait for
// it. It is never changed once published.
type snapshot struct {
	cfg      *config.App
	live     pool
	green    pool
	draining []pool
	holder   string
}

// pools are the live pool, the green one and those draining.
func (s *snapshot) pools() []pool {
	var out []pool
	for _, p := range []pool{s.live, s.green} {
		if p != nil {
			out = append(out, p)
		}
	}
	return append(out, s.draining...)
}

// loop is the state only the loop goroutine touches.
type loop struct {
	a        *App
	cfg      *config.App
	sockets  []*supervisor.Socket
	live     pool
	green    pool
	draining []pool

	running   *op
	cancelRun context.CancelCauseFunc
	holder    string
	queue     []*op
	stopWatch context.CancelFunc
	closing   bool
	detach    bool // closing hands the workers over rather than stop them
}

// start makes the channels and starts the loop with cfg and sockets.
func (a *App) start(cfg *config.App, sockets []*supervisor.Socket) {
	a.opc = make(chan *op)
	a.withdrawc = make(chan withdrawal)
	a.cancelc = make(chan cancelRequest)
	a.closec = make(chan closeRequest)
	a.finishedc = make(chan finished)
	a.swapc = make(chan swapRequest)
	a.greenc = make(chan pool)
	a.drainingc = make(chan pool)
	a.drainedc = make(chan pool)
	a.watchc = make(chan *watchSpec)
	a.done = make(chan struct{})
	a.stopped = make(chan struct{})
	l := &loop{a: a, cfg: cfg, sockets: sockets}
	l.publish()
	go l.run()
}

func (l *loop) run() {
	a := l.a
	for !l.closing || l.running != nil {
		select {
		case o := <-a.opc:
			l.submit(o)
		case w := <-a.withdrawc:
			w.reply <- l.withdraw(w.op)
		case c := <-a.cancelc:
			c.reply <- l.cancel(c.by)
		case c := <-a.closec:
			l.close(c)
		case f := <-a.finishedc:
			l.finish(f)
		case s := <-a.swapc:
			s.reply <- l.swap(s)
		case p := <-a.greenc:
			l.setPools(l.live, p, l.draining)
		case p := <-a.drainingc:
			l.setPools(l.live, l.green, append(slices.Clone(l.draining), p))
		case p := <-a.drainedc:
			l.setPools(l.live, l.green, slices.DeleteFunc(slices.Clone(l.draining), func(d pool) bool { return d == p }))
		case w := <-a.watchc:
			l.watch(w)
		}
	}
	close(a.done)
	if l.detach {
		l.letGo()
	} else {
		l.teardown()
	}
	close(a.stopped)
}

// publish stores a snapshot of the state for readers.
func (l *loop) publish() {
	l.a.view.Store(&snapshot{cfg: l.cfg, live: l.live, green: l.green, draining: slices.Clone(l.draining), holder: l.holder})
}

// setPools is the one place the pools change: it publishes them and saves
// them for the next daemon to adopt.
func (l *loop) setPools(live, green pool, draining []pool) {
	l.live, l.green, l.draining = live, green, draining
	l.publish()
	l.a.saveWorkers()
}

// submit starts o, or queues it behind the running operation.
func (l *loop) submit(o *op) {
	switch {
	case l.closing:
		o.result <- fmt.Errorf("app %s: %w", l.a.name, ErrClosed)
	case l.running == nil:
		l.begin(o)
	default:
		l.queue = append(l.queue, o)
		o.queued <- l.holder
	}
}

// begin runs o in a goroutine on the daemon's context, not its client's:
// only cancel and close stop it.
func (l *loop) begin(o *op) {
	ctx, cancel := context.WithCancelCause(l.a.work)
	l.running, l.cancelRun = o, cancel
	l.holder = fmt.Sprintf("%s (since %s)", o.what, time.Now().UTC().Format(time.TimeOnly))
	l.publish()
	close(o.started)
	acct, aerr := l.cfg.Account()
	j := &job{App: l.a, ctx: ctx, pr: o.pr, cfg: l.cfg, sockets: l.sockets, acct: acct}
	go func() {
		err := fmt.Errorf("app %s: user: %w", l.a.name, aerr)
		if aerr == nil {
			err = o.run(j)
		}
		l.a.finishedc <- finished{op: o, err: err}
	}()
}

// finish ends the running operation and starts the next one waiting.
func (l *loop) finish(f finished) {
	l.cancelRun(nil)
	l.running, l.cancelRun, l.holder = nil, nil, ""
	l.publish()
	f.op.result <- f.err
	if len(l.queue) > 0 && !l.closing {
		next := l.queue[0]
		l.queue = l.queue[1:]
		l.begin(next)
	}
}

func (l *loop) withdraw(o *op) bool {
	i := slices.Index(l.queue, o)
	if i < 0 {
		return false
	}
	l.queue = slices.Delete(l.queue, i, i+1)
	return true
}

func (l *loop) cancel(by string) cancelReply {
	if l.running == nil || !l.running.cancelable {
		return cancelReply{err: ErrNothingToCancel}
	}
	l.cancelRun(&cancelled{by: by})
	return cancelReply{holder: l.holder}
}

// close cancels what runs (unless it detaches) and turns away what waits;
// the loop ends once the running operation returned.
func (l *loop) close(c closeRequest) {
	if l.closing {
		return
	}
	l.closing, l.detach = true, c.detach
	if l.running != nil && !c.detach {
		l.cancelRun(&cancelled{by: c.by})
	}
	for _, o := range l.queue {
		o.result <- fmt.Errorf("app %s: %w", l.a.name, ErrClosed)
	}
	l.queue = nil
}

// teardown ends the watch, drains every pool and closes the sockets.
func (l *loop) teardown() {
	l.endWatch()
	for _, p := range l.allPools() {
		p.Stop()
	}
	l.setPools(nil, nil, nil)
	supervisor.CloseSockets(l.sockets)
	l.closeWorkerLog()
}

// letGo ends the watch and stops supervising every pool, leaving the
// workers running, saves them for the next daemon and closes the daemon's
// copies of the sockets.
func (l *loop) letGo() {
	l.endWatch()
	for _, p := range l.allPools() {
		p.Detach()
	}
	l.a.saveWorkers()
	for _, s := range l.sockets {
		s.Detach()
	}
	l.closeWorkerLog()
}

func (l *loop) closeWorkerLog() {
	if err := l.a.workerLog.Close(); err != nil {
		l.a.log.Error("close the worker log", "err", err)
	}
}

func (l *loop) allPools() []pool {
	return (&snapshot{live: l.live, green: l.green, draining: l.draining}).pools()
}

func (l *loop) swap(s swapRequest) pool {
	l.endWatch()
	l.cfg, l.sockets = s.cfg, s.sockets
	if s.green == nil {
		l.publish()
		return nil
	}
	blue := l.live
	draining := l.draining
	if blue != nil {
		draining = append(slices.Clone(draining), blue)
	}
	green := l.green
	if green == s.green {
		green = nil
	}
	l.setPools(s.green, green, draining)
	return blue
}

// watch starts w (ending the one running), or only ends it if w is nil.
func (l *loop) watch(w *watchSpec) {
	l.endWatch()
	if w == nil {
		return
	}
	ctx, cancel := context.WithTimeout(l.a.work, w.period)
	l.stopWatch = cancel
	go l.a.watch(ctx, w)
}

func (l *loop) endWatch() {
	if l.stopWatch != nil {
		l.stopWatch()
		l.stopWatch = nil
	}
}

// cancelled is why an operation's context ended on deployer cancel or close.
type cancelled struct{ by string }

func (c *cancelled) Error() string { return "cancelled by " + c.by }

// cancelledBy says who cancelled the operation of ctx, "" if nobody did.
func cancelledBy(ctx context.Context) string {
	var c *cancelled
	if errors.As(context.Cause(ctx), &c) {
		return c.by
	}
	return ""
}
