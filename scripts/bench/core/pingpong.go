// SPDX-License-Identifier: MIT
// pingpong.go -- Go: two goroutines bounce a value over two unbuffered
// channels; prints nanoseconds per round trip. Usage: pingpong [N]
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func main() {
	n := 1000000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	const warm = 10000
	ping, pong := make(chan int), make(chan int)
	go func() {
		for i := 0; i < warm+n; i++ {
			v := <-ping
			pong <- v
		}
	}()
	for i := 0; i < warm; i++ {
		ping <- i
		<-pong
	}
	t0 := time.Now()
	for i := 0; i < n; i++ {
		ping <- i
		<-pong
	}
	el := time.Since(t0)
	fmt.Printf("RESULT pingpong ns_per_rt %.1f\n", float64(el.Nanoseconds())/float64(n))
}
