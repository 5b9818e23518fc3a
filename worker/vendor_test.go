package worker_test

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// vendored is the example app's copy of this package, which lets a copy of
// examples/hello build on its own.
const vendored = "../examples/hello/vendor/github.com/deployer/deployer/worker"

// sources returns the package's non-test Go files in dir, by name.
func sources(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		files[filepath.Base(p)] = b
	}
	return files
}

func TestExampleVendorsThisPackageUnchanged(t *testing.T) {
	want, got := sources(t, "."), sources(t, vendored)
	if len(want) == 0 {
		t.Fatal("no sources found in worker/")
	}
	var names []string
	for name := range want {
		names = append(names, name)
	}
	for name := range got {
		if _, ok := want[name]; !ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		if !bytes.Equal(want[name], got[name]) {
			t.Errorf("%s/%s differs from worker/%s; run examples/hello/update-vendor.sh", vendored, name, name)
		}
	}
}
