package supervisor

import (
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// keepBuiltins are commands that must run in the shell itself.
var keepBuiltins = map[string]bool{
	"exec": true, "exit": true, "cd": true, "wait": true, "eval": true, ".": true, "source": true,
	"export": true, "set": true, "unset": true, "trap": true, "return": true, "shift": true,
	"read": true, "ulimit": true, "umask": true, ":": true, "true": true, "false": true, "local": true,
}

// workerScript is what a worker's sh -c runs: START with its last simple
// command exec'd, after exporting LISTEN_PID=$$.
//
// The systemd protocol wants LISTEN_PID to be the pid of the process that
// reads the sockets, and go-systemd and gunicorn ignore the sockets
// otherwise. dash, Debian's /bin/sh, forks for the last command of sh -c
// instead of exec'ing it, so "./bin/hello" would run as a child with another
// pid. Exec'ing the tail command keeps one pid from fork to app: the shell's
// $$ is then the app's pid, and so is the pid the daemon signals and reaps.
func workerScript(start string) string {
	return "LISTEN_PID=$$; export LISTEN_PID; " + execTail(start)
}

// execTail inserts "exec " before the command that runs last in script, when
// that is a plain command in the foreground. Anything else is left as written.
func execTail(script string) string {
	f, err := syntax.NewParser().Parse(strings.NewReader(script), "")
	if err != nil || len(f.Stmts) == 0 {
		return script
	}
	stmt := f.Stmts[len(f.Stmts)-1]
	for {
		if stmt.Background || stmt.Coprocess || stmt.Negated {
			return script
		}
		switch cmd := stmt.Cmd.(type) {
		case *syntax.BinaryCmd:
			if cmd.Op != syntax.AndStmt && cmd.Op != syntax.OrStmt {
				return script
			}
			stmt = cmd.Y
			continue
		case *syntax.CallExpr:
			if len(cmd.Args) == 0 {
				return script
			}
			if name := cmd.Args[0].Lit(); keepBuiltins[name] {
				return script
			}
			off := cmd.Args[0].Pos().Offset()
			return script[:off] + "exec " + script[off:]
		default:
			return script
		}
	}
}
