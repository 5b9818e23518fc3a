// Command hello is deployer's example app: an HTTP server on the sockets the
// daemon passes, drained gracefully by the worker package.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
	"strings"

	"github.com/deployer/deployer/worker"
)

func main() {
	lns, err := worker.Listeners()
	if err != nil {
		log.Fatal(err)
	}
	greeting := os.Getenv("GREETING")
	if greeting == "" {
		greeting = "hi"
	}
	if b, err := os.ReadFile("message.txt"); err == nil {
		greeting += " " + strings.TrimSpace(string(b))
	}
	rev := os.Getenv("DEPLOYER_REVISION")
	if len(rev) > 7 {
		rev = rev[:7]
	}
	answer := fmt.Sprintf("hello from %s (%s) worker %s: %s\n",
		os.Getenv("DEPLOYER_RELEASE"), rev, os.Getenv("DEPLOYER_WORKER"), greeting)

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, answer)
	})
	if err := worker.ServeAll(&http.Server{Handler: mux}, lns); err != nil {
		log.Fatal(err)
	}
}
