package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/deployer/deployer/hooks/gitserver"
	"github.com/deployer/deployer/internal/testutil"
)

// The recipes (docs/recipes/NAME.md) are tested as a user follows them: the
// page's one ```yaml block that holds an apps: entry is the app's config,
// word for word but for its listen address, and examples/recipes/NAME is
// the repository pushed. Each recipe's app answers GET / with a body that
// names $DEPLOYER_RELEASE, so a test can tell which release served.

// recipe is one page of docs/recipes.
type recipe struct {
	name string
	app  map[string]any // the page's settings of its one app
}

// loadRecipe reads docs/recipes/name.md and finds its app config block.
func loadRecipe(t *testing.T, name string) recipe {
	t.Helper()
	page, err := os.ReadFile(filepath.Join("../../docs/recipes", name+".md"))
	if err != nil {
		t.Fatal(err)
	}
	var found []map[string]any
	rest := string(page)
	for {
		i := strings.Index(rest, "```yaml\n")
		if i < 0 {
			break
		}
		rest = rest[i+len("```yaml\n"):]
		j := strings.Index(rest, "```")
		if j < 0 {
			t.Fatalf("%s.md: a ```yaml block is not closed", name)
		}
		block := rest[:j]
		rest = rest[j+3:]
		var doc struct {
			Apps map[string]map[string]any `yaml:"apps"`
		}
		if err := yaml.Unmarshal([]byte(block), &doc); err != nil {
			t.Fatalf("%s.md: a yaml block does not parse: %v\n%s", name, err, block)
		}
		for _, app := range doc.Apps {
			found = append(found, app)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s.md: want exactly one app in its ```yaml blocks, found %d", name, len(found))
	}
	return recipe{name: name, app: found[0]}
}

// requireCommands skips t unless every command is installed.
func requireCommands(t *testing.T, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if _, err := exec.LookPath(c); err != nil {
			t.Skipf("%s is not installed (.ci/run installs it)", c)
		}
	}
}

// debianPython is the python3 the Debian packages of the recipes install
// into; a python3 earlier on the PATH (pyenv, a venv) would not see them.
const debianPython = "/usr/bin/python3"

// serverPath is the PATH a recipe's daemon runs with: a Debian server's,
// plus Go's for the Go recipe's build.
const serverPath = "/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// requirePython skips t unless Debian's python3 can import every module.
func requirePython(t *testing.T, modules ...string) {
	t.Helper()
	requireCommands(t, debianPython)
	for _, m := range modules {
		if out, err := exec.Command(debianPython, "-c", "import "+m).CombinedOutput(); err != nil {
			t.Skipf("python3 module %s is not installed (.ci/run installs it): %s", m, bytes.TrimSpace(out))
		}
	}
}

// deployRecipe starts a daemon whose app "hello" has the recipe's settings,
// pushes examples/recipes/NAME as v1 and checks that it serves.
func deployRecipe(t *testing.T, name string) (*daemon, *appRepo) {
	t.Helper()
	rc := loadRecipe(t, name)
	d := startAppDaemon(t, rc.app, "PATH="+serverPath)
	r := &appRepo{t: t, dir: filepath.Join(t.TempDir(), name)}
	if err := os.CopyFS(r.dir, os.DirFS(filepath.Join("../../examples/recipes", name))); err != nil {
		t.Fatal(err)
	}
	r.git("init", "-q", "-b", "main")
	r.commit("v1", nil)
	out := r.mustPush(d)
	if h, _ := rc.app["health"].(map[string]any); h["warmup"] != nil {
		n := fmt.Sprint(h["warmup"].(int) * rc.app["workers"].(int))
		if want := "Warm-up: " + n + " GET " + h["http"].(string) + " on the live socket, " + n + " answered 2xx"; !strings.Contains(out, want) {
			t.Fatalf("%s v1: the push does not say %q:\n%s", name, want, out)
		}
	}
	if body, err := d.get(); err != nil || !strings.Contains(body, "v1") {
		t.Fatalf("%s v1: GET / = %q, %v\ndaemon log:\n%s", name, body, err, d.log)
	}
	return d, r
}

// startAppDaemon starts a daemon whose one app, "hello", has the settings
// app (YAML keys as in a config file) but for listen, a free port, and
// branch, main. env is added to the daemon's environment.
func startAppDaemon(t *testing.T, settings map[string]any, env ...string) *daemon {
	t.Helper()
	d := &daemon{t: t, dir: t.TempDir(), gitAddr: freeAddr(t), appAddr: freeAddr(t), log: &lockedBuffer{}}
	for d.appAddr == d.gitAddr {
		d.appAddr = freeAddr(t)
	}
	if err := os.WriteFile(filepath.Join(d.dir, "tokens"), []byte(gitserver.HashToken("alice", testToken)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	app := map[string]any{}
	for k, v := range settings {
		app[k] = v
	}
	app["listen"] = []string{d.appAddr}
	app["branch"] = "main"
	cfg := map[string]any{
		"data_dir": "data",
		"git":      map[string]any{"http_listen": d.gitAddr, "tokens_file": "tokens", "lock_timeout": "2m"},
		"apps":     map[string]any{"hello": app},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.config = filepath.Join(d.dir, "deployer.yaml")
	if err := os.WriteFile(d.config, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if len(env) > 0 {
		d.command = func() *exec.Cmd {
			cmd := exec.Command(daemonBin, "serve", "-c", d.config)
			cmd.Env = append(os.Environ(), env...)
			return cmd
		}
	}
	d.start()
	t.Cleanup(d.stop)
	return d
}

// swapUnderLoad pushes v2 while clients keep-alive clients GET /, and
// returns the load, stopped, to count what failed. The swap itself must
// succeed and v2 must serve after it.
func swapUnderLoad(t *testing.T, d *daemon, r *appRepo, clients int) *testutil.Load {
	t.Helper()
	l := testutil.StartLoad(t, "http://"+d.appAddr+"/", clients)
	testutil.WaitFor(t, 30*time.Second, "the load to get answers", func() bool { return l.OK() > 0 })
	r.commit("v2", nil)
	r.mustPush(d)
	// The push returns at the cut-over; the old workers drain after it.
	// The load runs on until they are gone, so their shutdown is measured.
	testutil.WaitFor(t, 60*time.Second, "v1's workers to finish draining", func() bool { return len(d.draining()) == 0 })
	l.Stop()
	if body, err := d.get(); err != nil || !strings.Contains(body, "v2") {
		t.Fatalf("after the swap GET / = %q, %v\ndaemon log:\n%s", body, err, d.log)
	}
	t.Logf("RECIPE %s: %d requests during a swap under load with %d keep-alive connections, %d failed %v",
		filepath.Base(r.dir), l.OK()+l.Failed(), clients, l.Failed(), l.Sample())
	return l
}

// mustDrain is swapUnderLoad for a server that drains on its stop signal:
// no request may fail.
func mustDrain(t *testing.T, d *daemon, r *appRepo, clients int) {
	t.Helper()
	l := swapUnderLoad(t, d, r, clients)
	if l.Failed() != 0 {
		t.Fatalf("%d of %d requests failed during the swap, e.g. %v\ndaemon log:\n%s", l.Failed(), l.OK()+l.Failed(), l.Sample(), d.log)
	}
	if l.OK() < 20 {
		t.Fatalf("only %d requests ran during the swap: the load proved nothing", l.OK())
	}
}
