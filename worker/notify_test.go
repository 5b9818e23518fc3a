package worker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/deployer/deployer/worker"
)

func TestNotifySendsOneDatagramToNotifySocket(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		name := "path"
		if abstract {
			name = "abstract"
		}
		t.Run(name, func(t *testing.T) {
			ns := listenNotify(t, abstract)
			t.Setenv("NOTIFY_SOCKET", ns.name)
			if err := worker.Notify("STATUS=warming up\nMAINPID=1"); err != nil {
				t.Fatal(err)
			}
			if err := worker.Ready(); err != nil {
				t.Fatal(err)
			}
			ns.expect(t, "STATUS=warming up\nMAINPID=1", 5*time.Second)
			ns.expect(t, "READY=1", 5*time.Second)
		})
	}
}

func TestNotifyWithoutNotifySocketDoesNothing(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := worker.Ready(); err != nil {
		t.Fatalf("Ready() without NOTIFY_SOCKET = %v, want nil", err)
	}
}

func TestNotifyReportsAnUnusableSocket(t *testing.T) {
	for _, name := range []string{"relative/notify", "/nonexistent/deployer/notify"} {
		t.Setenv("NOTIFY_SOCKET", name)
		err := worker.Ready()
		if err == nil || !strings.HasPrefix(err.Error(), "notify") {
			t.Errorf("NOTIFY_SOCKET=%s: Ready() = %v, want a notify error", name, err)
		}
	}
}
