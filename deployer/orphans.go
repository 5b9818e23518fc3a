package deployer

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// killProcessesIn kills every process whose working directory is dir or
// below it: what a build left running when the daemon was killed. Pdeathsig
// reaches only the build's shell; its children are reparented to init.
func killProcessesIn(dir string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cwd")
	for _, p := range procs {
		cwd, err := os.Readlink(p)
		if err != nil || (cwd != dir && !strings.HasPrefix(cwd, dir+"/")) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
