// SPDX-License-Identifier: MIT
// spawn.go -- Go: spawn N goroutines that each park on a channel receive;
// prints the wall time until all are parked and the peak RSS growth per
// parked goroutine. Usage: spawn [N]
package main

import (
	"fmt"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"sync"
	"time"
)

// hwm returns VmHWM (peak resident set) of this process, in bytes.
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
	n := 1000000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	ch := make(chan int)
	var started sync.WaitGroup
	started.Add(n)
	runtime.GC()
	base := hwm()
	t0 := time.Now()
	for i := 0; i < n; i++ {
		go func() {
			started.Done()
			<-ch
		}()
	}
	started.Wait()
	// With GOMAXPROCS=1 the last Done runs just before its receive; yield
	// once so that every goroutine has reached it.
	runtime.Gosched()
	el := time.Since(t0).Seconds()
	peak := hwm()
	fmt.Printf("RESULT spawn seconds %.4f\n", el)
	fmt.Printf("RESULT spawn bytes_per_co %.0f\n", (peak-base)/float64(n))
	os.Exit(0)
}
