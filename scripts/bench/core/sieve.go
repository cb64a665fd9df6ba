// SPDX-License-Identifier: MIT
// sieve.go -- Go's concurrent prime sieve (from the Go tour and spec), a
// chain of goroutines linked by unbuffered channels, run until it yields the
// first N primes. Prints the wall time and the last prime. Usage: sieve [N]
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

func generate(ch chan<- int) {
	for i := 2; ; i++ {
		ch <- i
	}
}

func filter(in <-chan int, out chan<- int, prime int) {
	for {
		i := <-in
		if i%prime != 0 {
			out <- i
		}
	}
}

func main() {
	n := 2000
	if len(os.Args) > 1 {
		n, _ = strconv.Atoi(os.Args[1])
	}
	t0 := time.Now()
	ch := make(chan int)
	go generate(ch)
	prime := 0
	for i := 0; i < n; i++ {
		prime = <-ch
		ch1 := make(chan int)
		go filter(ch, ch1, prime)
		ch = ch1
	}
	el := time.Since(t0)
	fmt.Printf("RESULT sieve ms %.2f\n", el.Seconds()*1e3)
	fmt.Printf("RESULT sieve last_prime %d\n", prime)
}
