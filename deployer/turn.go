package deployer

import (
	"context"
	"fmt"
	"time"
)

// The requests other goroutines send an app's loop (loop.go): an operation
// to run in its turn, a cancel, a close or a detach.

// do runs o in its turn and returns its outcome. While it waits it tells o's
// client who holds the turn, every waitReport (10 s), and gives up after the lock timeout
// or when wait ends; once started it runs to its end whatever its client
// does, and do waits for it.
func (a *App) do(wait context.Context, o *op) error {
	if o.pr == nil {
		o.pr = newProgress(nil)
	}
	o.started, o.queued, o.result = make(chan struct{}), make(chan string, 1), make(chan error, 1)
	select {
	case a.opc <- o:
	case <-a.done:
		return fmt.Errorf("app %s: %w", a.name, ErrClosed)
	}
	select {
	case <-o.started:
	case err := <-o.result:
		return err
	case holder := <-o.queued:
		if err, ended := a.awaitTurn(wait, o, holder); ended {
			return err
		}
	}
	return <-o.result
}

// awaitTurn waits until o starts. ended says that o will not run, or
// already ran, and err is its outcome.
func (a *App) awaitTurn(wait context.Context, o *op, holder string) (err error, ended bool) {
	o.pr.Step("Waiting for the deploy lock of %s: held by %s", a.name, holder)
	timeout := time.NewTimer(a.lockTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(a.waitReport)
	defer tick.Stop()
	for {
		select {
		case <-o.started:
			return nil, false
		case err := <-o.result: // the app closed
			return err, true
		case <-tick.C:
			o.pr.Info("still waiting: %s", a.holder())
		case <-timeout.C:
			return a.withdraw(o, fmt.Errorf("%w: %s; gave up after %s", ErrLockTimeout, a.holder(), a.lockTimeout))
		case <-wait.Done():
			return a.withdraw(o, context.Cause(wait))
		}
	}
}

// withdraw takes o out of the queue; if the loop started or ended it
// meanwhile, its outcome is awaited instead.
func (a *App) withdraw(o *op, why error) (error, bool) {
	reply := make(chan bool, 1)
	select {
	case a.withdrawc <- withdrawal{op: o, reply: reply}:
		if <-reply {
			return why, true
		}
	case <-a.done: // every queued op got its result before done closed
	}
	return nil, false
}

// cancel stops the running deploy, rollback or reload and says what it was.
func (a *App) cancel(by string) (string, error) {
	reply := make(chan cancelReply, 1)
	select {
	case a.cancelc <- cancelRequest{by: by, reply: reply}:
		r := <-reply
		return r.holder, r.err
	case <-a.done:
		return "", ErrNothingToCancel
	}
}

// close stops the app for good and returns once its pools drained and its
// sockets closed. Later operations get ErrClosed.
func (a *App) close(by string) { a.end(closeRequest{by: by}) }

// detach lets go of the app without stopping anything: it waits for the
// running operation, stops supervising the workers, saves them for the next
// daemon and closes the daemon's copies of the sockets. The workers go on
// serving; later operations get ErrClosed.
func (a *App) detach() { a.end(closeRequest{by: "handover", detach: true}) }

func (a *App) end(c closeRequest) {
	select {
	case a.closec <- c:
	case <-a.done:
	}
	<-a.stopped
}
