// Command latency-timeline loads an HTTP address with keep-alive
// connections sending GET / back to back, and prints the latency of the
// requests by when they were sent, in buckets (count, p50, p99, max), so a
// swap's cost can be seen where it happens. Lines read on stdin are printed
// as marks with the time they arrived (bench/swap-timeline.sh marks each
// reload's start and end).
//
//	latency-timeline -addr 127.0.0.1:8080 -c 64 -d 16s -b 100ms < marks
//
// With -rate N the load is open: N requests per second in all, each
// connection on a fixed schedule, latency counted from when a request was
// due (as wrk2 does), so the latency below saturation can be measured.
//
// A mark "phase NAME" starts a phase: the requests sent until the next
// such mark are counted in NAME, and a table says where the slow requests
// were (bench/swap-timeline.sh marks each step of a reload). A line
// "stop" ends the load before -d has passed.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type sample struct {
	at, lat time.Duration
	fresh   bool // the first request on its connection
	connect time.Duration
}

func main() {
	addr := flag.String("addr", "", "host:port to load")
	conns := flag.Int("c", 64, "connections")
	dur := flag.Duration("d", 20*time.Second, "how long")
	bucket := flag.Duration("b", 100*time.Millisecond, "bucket width")
	rate := flag.Float64("rate", 0, "requests per second in all, sent on a fixed schedule (0: back to back)")
	raw := flag.String("raw", "", "also write each request to this file: sent-at and latency (µs), whether it was its connection's first, and how long that connection took to dial (µs)")
	flag.Parse()
	if *addr == "" {
		fmt.Fprintln(os.Stderr, "latency-timeline: -addr is required")
		os.Exit(2)
	}
	start := time.Now()
	var mu sync.Mutex
	var all []sample
	var marks []string
	var phases []phaseMark
	var firstMark time.Duration
	errs := 0
	// A line "stop" on stdin ends the load before -d.
	var stopped atomic.Bool
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if sc.Text() == "stop" {
				stopped.Store(true)
				return
			}
			mu.Lock()
			if firstMark == 0 {
				firstMark = time.Since(start)
			}
			marks = append(marks, fmt.Sprintf("%8.2f %s", time.Since(start).Seconds(), sc.Text()))
			if name, ok := strings.CutPrefix(sc.Text(), "phase "); ok {
				phases = append(phases, phaseMark{time.Since(start), name})
			}
			mu.Unlock()
		}
	}()
	// With -rate, each connection sends on a fixed schedule and a
	// request's latency counts from when it was due, not from when it
	// could be sent: a late answer delays the requests queued behind it on
	// its connection, and they count that delay (no coordinated omission,
	// as in wrk2).
	var every time.Duration
	if *rate > 0 {
		every = time.Duration(float64(*conns) / *rate * float64(time.Second))
	}
	var wg sync.WaitGroup
	for i := range *conns {
		wg.Go(func() {
			var local []sample
			var c net.Conn
			var r *bufio.Reader
			due := start.Add(every * time.Duration(i) / time.Duration(*conns))
			for time.Since(start) < *dur && !stopped.Load() {
				fresh := c == nil
				var connect time.Duration
				if c == nil {
					d0 := time.Now()
					var err error
					if c, err = net.DialTimeout("tcp", *addr, 5*time.Second); err != nil {
						mu.Lock()
						errs++
						mu.Unlock()
						time.Sleep(10 * time.Millisecond)
						continue
					}
					r = bufio.NewReader(c)
					connect = time.Since(d0)
				}
				t0 := time.Now()
				if every > 0 {
					if d := time.Until(due); d > 0 {
						time.Sleep(d)
					}
					t0 = due
					due = due.Add(every)
				}
				keep, err := get(c, r)
				if err != nil {
					mu.Lock()
					errs++
					mu.Unlock()
					c.Close()
					c = nil
					continue
				}
				local = append(local, sample{t0.Sub(start), time.Since(t0), fresh, connect})
				if !keep {
					c.Close()
					c = nil
				}
			}
			if c != nil {
				c.Close()
			}
			mu.Lock()
			all = append(all, local...)
			mu.Unlock()
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(all) == 0 {
		fmt.Println("no answers")
		return
	}
	if *raw != "" {
		if err := writeRaw(*raw, all); err != nil {
			fmt.Fprintln(os.Stderr, "latency-timeline:", err)
		}
	}
	lats := make([]time.Duration, len(all))
	for i, s := range all {
		lats[i] = s.lat
	}
	slices.Sort(lats)
	fmt.Printf("total %d errors %d p50 %.2f p99 %.2f max %.2f (ms)\n", len(lats), errs, ms(lats[len(lats)/2]), ms(lats[len(lats)*99/100]), ms(lats[len(lats)-1]))
	if firstMark > 0 {
		// Steady: after the load's own first second, before the first
		// mark; swaps: from the first mark on.
		var steady, swaps []time.Duration
		for _, s := range all {
			switch {
			case s.at >= firstMark:
				swaps = append(swaps, s.lat)
			case s.at >= time.Second:
				steady = append(steady, s.lat)
			}
		}
		if len(steady) > 0 && len(swaps) > 0 {
			slices.Sort(steady)
			slices.Sort(swaps)
			p99s, p99w := ms(steady[len(steady)*99/100]), ms(swaps[len(swaps)*99/100])
			fmt.Printf("p99 steady %.2f, from the first mark on %.2f (ms): ratio %.2f\n", p99s, p99w, p99w/p99s)
			printPhases(all, phases, steady[len(steady)*99/100], len(swaps))
		}
	}
	for _, m := range marks {
		fmt.Println("MARK", m)
	}
	buckets := make([][]time.Duration, int(*dur / *bucket)+1)
	for _, s := range all {
		if k := int(s.at / *bucket); k < len(buckets) {
			buckets[k] = append(buckets[k], s.lat)
		}
	}
	for k, l := range buckets {
		if len(l) == 0 {
			continue
		}
		slices.Sort(l)
		fmt.Printf("%6.1f n=%6d p50=%6.2f p99=%7.2f max=%7.2f\n", float64(k)*bucket.Seconds(), len(l), ms(l[len(l)/2]), ms(l[len(l)*99/100]), ms(l[len(l)-1]))
	}
}

// get sends GET / on c and reads the answer; keep says whether the
// connection may be used again.
func get(c net.Conn, r *bufio.Reader) (keep bool, err error) {
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: bench\r\n\r\n"); err != nil {
		return false, err
	}
	tp := textproto.NewReader(r)
	status, err := tp.ReadLine()
	if err != nil {
		return false, err
	}
	if !strings.HasPrefix(status, "HTTP/1.1 2") {
		return false, fmt.Errorf("answer %q", status)
	}
	h, err := tp.ReadMIMEHeader()
	if err != nil {
		return false, err
	}
	n, err := strconv.Atoi(h.Get("Content-Length"))
	if err != nil {
		return false, fmt.Errorf("no Content-Length: %w", err)
	}
	if _, err := io.CopyN(io.Discard, r, int64(n)); err != nil {
		return false, err
	}
	return !strings.EqualFold(h.Get("Connection"), "close"), nil
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }

// phaseMark is a mark "phase NAME": from then until the next one, the
// requests sent belong to phase NAME.
type phaseMark struct {
	at   time.Duration
	name string
}

// printPhases says, for each phase named by the marks (all its stretches
// together), how many requests were sent in it, their p99, and how many
// took over 1.5× the steady p99: as a share of the phase, and of all the
// requests sent since the first mark (swaps, in all). For the p99 since
// the first mark to stay within 1.5× steady, those shares must add up to
// under 1%.
func printPhases(all []sample, phases []phaseMark, p99 time.Duration, swaps int) {
	if len(phases) == 0 {
		return
	}
	var order []string
	by := map[string][]time.Duration{}
	for _, s := range all {
		i := sort.Search(len(phases), func(i int) bool { return phases[i].at > s.at }) - 1
		if i < 0 {
			continue
		}
		name := phases[i].name
		if _, ok := by[name]; !ok {
			order = append(order, name)
		}
		by[name] = append(by[name], s.lat)
	}
	fmt.Printf("by phase (slow: over 1.5× the steady p99, %.2f ms):\n", ms(p99*3/2))
	for _, name := range order {
		l := by[name]
		slices.Sort(l)
		slow := len(l) - sort.Search(len(l), func(i int) bool { return l[i] > p99*3/2 })
		fmt.Printf("  %-14s n=%8d p99=%8.2f slow=%7d (%5.2f%% of the phase, %5.2f%% of all since the first mark)\n",
			name, len(l), ms(l[len(l)*99/100]), slow, 100*float64(slow)/float64(len(l)), 100*float64(slow)/float64(swaps))
	}
}

// writeRaw writes every sample, as "sent-at latency" in microseconds.
func writeRaw(path string, all []sample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, s := range all {
		fmt.Fprintf(w, "%d %d %t %d\n", s.at.Microseconds(), s.lat.Microseconds(), s.fresh, s.connect.Microseconds())
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
