package supervisor

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// FDKeeper holds copies of descriptors in a process other than the daemon,
// so that they outlive it: the next daemon takes them back (fdstore.Client).
// Put borrows fd: the keeper has its own copy once Put returns.
type FDKeeper interface {
	Put(name string, fd int) error
	Del(name string)
}

// OutputName is the keeper's name for the output pipe of worker pid of app.
func OutputName(app string, pid int) string {
	return "out/" + app + "/" + strconv.Itoa(pid)
}

// putFile hands a copy of f to the keeper without (*os.File).Fd, which
// would switch f to blocking mode.
func putFile(k FDKeeper, name string, f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	if err := rc.Control(func(fd uintptr) { perr = k.Put(name, int(fd)) }); err != nil {
		return err
	}
	if perr != nil {
		return fmt.Errorf("keep %s: %w", name, perr)
	}
	return nil
}

// pipeSize is how much a worker may write while no daemon reads its
// output (between a crash and the next start) before its writes block.
const pipeSize = 1 << 20

// growPipe raises a pipe's buffer to pipeSize, or as far as the system
// allows (/proc/sys/fs/pipe-max-size).
func growPipe(f *os.File) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) { _, _ = unix.FcntlInt(fd, unix.F_SETPIPE_SZ, pipeSize) })
}
