// SPDX-License-Identifier: MIT
// idle.go ADDR N -- the client side of the idle-connection test in
// scripts/bench/http.sh: opens N keep-alive connections to ADDR (loopback
// only), sends one request on each and reads its response, prints
// "ready N" and then holds every connection open and idle until its
// standard input closes. Connections are opened a few hundred at a time so
// that the server's accept backlog never overflows.
package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: idle ADDR N")
		os.Exit(2)
	}
	addr := os.Args[1]
	n, err := strconv.Atoi(os.Args[2])
	if err != nil || n < 1 {
		fmt.Fprintln(os.Stderr, "idle: bad N")
		os.Exit(2)
	}
	req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
	conns := make([]net.Conn, n)
	var mu sync.Mutex
	failed := 0
	sem := make(chan struct{}, 200)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(i int) {
			defer func() { <-sem; wg.Done() }()
			c, err := net.DialTimeout("tcp", addr, 10*time.Second)
			if err == nil {
				err = exchange(c, req)
				if err != nil {
					c.Close()
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if failed == 0 {
					fmt.Fprintln(os.Stderr, "idle:", err)
				}
				failed++
				return
			}
			conns[i] = c
		}(i)
	}
	wg.Wait()
	fmt.Printf("ready %d\n", n-failed)
	os.Stdout.Sync()
	io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// exchange sends one request and reads the whole response (its head and a
// Content-Length or chunked body).
func exchange(c net.Conn, req []byte) error {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(req); err != nil {
		return err
	}
	r := bufio.NewReaderSize(c, 1024)
	length, chunked := -1, false
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok &&
			bytes.EqualFold(bytes.TrimSpace(k), []byte("content-length")) {
			length, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		} else if ok && bytes.EqualFold(bytes.TrimSpace(k), []byte("transfer-encoding")) {
			chunked = bytes.Contains(v, []byte("chunked"))
		}
	}
	if chunked {
		for {
			line, err := r.ReadSlice('\n')
			if err != nil {
				return err
			}
			size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
			if err != nil {
				return err
			}
			if _, err := io.CopyN(io.Discard, r, size+2); err != nil {
				return err
			}
			if size == 0 {
				return nil
			}
		}
	}
	if length < 0 {
		return fmt.Errorf("response without Content-Length")
	}
	_, err := io.CopyN(io.Discard, r, int64(length))
	return err
}
