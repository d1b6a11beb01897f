// The Go tutorial's worker pool pattern ("Writing a Worker Pool for
// Production": a buffered channel of 100 jobs, W goroutines ranging over it,
// a WaitGroup), on the same workloads as the Rust harness. Prints one line
// per cell: workload,workers,ns_per_job,cpu_ns_per_job (medians of the
// repetitions; CPU is the process's user + system time, every thread).
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"sync"
	"syscall"
	"time"
)

// cpuTime is the process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type Job struct {
	ID      uint64
	Payload [64]byte
}

var sink uint64

func cpu(p *[64]byte, rounds uint64) uint64 {
	var x uint64
	for _, b := range p {
		x += uint64(b)
	}
	for i := uint64(0); i < rounds; i++ {
		x = x*6364136223846793005 + 1442695040888963407
	}
	return x
}

func run(n int, workers int, rounds uint64, sleep bool) time.Duration {
	jobs := make(chan Job, 100)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local uint64
			for j := range jobs {
				local += cpu(&j.Payload, rounds)
				if sleep {
					time.Sleep(10 * time.Millisecond)
				}
			}
			mu.Lock()
			sink += local
			mu.Unlock()
		}()
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		var j Job
		j.ID = uint64(i)
		j.Payload[0] = byte(i)
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	return time.Since(start)
}

func median(v []float64) float64 {
	sort.Float64s(v)
	return v[len(v)/2]
}

func main() {
	quick := flag.Bool("quick", false, "a smoke run: 1/100 of the jobs, one repetition")
	reps := flag.Int("reps", 5, "repetitions per cell")
	rounds := flag.Uint64("micro-rounds", 0, "rounds of work for about 1 µs (from the Rust harness's calibration)")
	flag.Parse()
	scale := 1
	if *quick {
		scale = 100
		*reps = 1
	}
	if *rounds == 0 {
		fmt.Fprintln(os.Stderr, "go: --micro-rounds is required")
		os.Exit(2)
	}
	fmt.Printf("# %s, GOMAXPROCS=%d\n", runtime.Version(), runtime.GOMAXPROCS(0))
	cells := []struct {
		name    string
		n       int
		workers []int
		rounds  uint64
		sleep   bool
	}{
		{"trivial", 1000000 / scale, []int{2, 8, 64}, 0, false},
		{"micro", 1000000 / scale, []int{2, 8, 64}, *rounds, false},
		{"sleep", 100000 / scale, []int{1000}, 0, true},
	}
	for _, c := range cells {
		for _, w := range c.workers {
			var runs, cpus []float64
			for r := 0; r < *reps; r++ {
				before := cpuTime()
				d := run(c.n, w, c.rounds, c.sleep)
				used := cpuTime() - before
				runs = append(runs, float64(d.Nanoseconds())/float64(c.n))
				cpus = append(cpus, float64(used.Nanoseconds())/float64(c.n))
			}
			fmt.Printf("%s,%d,%.1f,%.1f\n", c.name, w, median(runs), median(cpus))
		}
	}
}
