// SPDX-License-Identifier: MIT
// sleep.go -- Go: N goroutines each sleep a random 0-1 s, all requested
// together. Prints the same figures as sleep.lua: lateness of the last
// wakeup against deadlines counted from the start of the run and from each
// sleep call, mean lateness, wall time and peak RSS growth. Usage: sleep [N]
package main

import (
	"fmt"
	"math/rand"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"time"
)

func hwm() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		panic(err)
	}
	m := regexp.MustCompile(`VmHWM:\s*(\d+)`).FindSubmatch(b)
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v * 1024
}

func main() {
	n := 100000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	var mu sync.Mutex // uncontended with GOMAXPROCS=1, but keeps it correct
	var maxDeadline, lastWake time.Time
	var maxD time.Duration
	var lateSum time.Duration
	var wg sync.WaitGroup
	wg.Add(n)
	rng := rand.New(rand.NewSource(42))
	runtime.GC()
	base := hwm()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		d := time.Duration(rng.Float64() * float64(time.Second))
		go func() {
			deadline := time.Now().Add(d)
			time.Sleep(d)
			t := time.Now()
			mu.Lock()
			if deadline.After(maxDeadline) {
				maxDeadline = deadline
			}
			if d > maxD {
				maxD = d
			}
			if t.After(lastWake) {
				lastWake = t
			}
			lateSum += t.Sub(deadline)
			mu.Unlock()
			wg.Done()
		}()
	}
	wg.Wait()
	peak := hwm()
	fmt.Printf("RESULT sleep past_last_deadline_ms %.3f\n", (lastWake.Sub(t0)-maxD).Seconds()*1e3)
	fmt.Printf("RESULT sleep last_late_ms %.3f\n", lastWake.Sub(maxDeadline).Seconds()*1e3)
	fmt.Printf("RESULT sleep mean_late_ms %.3f\n", lateSum.Seconds()/float64(n)*1e3)
	fmt.Printf("RESULT sleep wall_s %.4f\n", lastWake.Sub(t0).Seconds())
	fmt.Printf("RESULT sleep rss_mb %.1f\n", (peak-base)/1048576)
}
