// SPDX-License-Identifier: MIT
// client.go N CONNS URL CAFILE MODE -- the Go side of scripts/bench/tls.sh:
// N HTTPS GETs from CONNS goroutines through one net/http client (run
// with GOMAXPROCS=1), verified against CAFILE. MODE: "keepalive" (a pool
// of kept-alive connections), "new" (a new connection and a full
// handshake per request) or "resume" (a new connection per request,
// resuming the TLS session). Prints like client.lua.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	n, _ := strconv.Atoi(os.Args[1])
	conns, _ := strconv.Atoi(os.Args[2])
	url, caFile, mode := os.Args[3], os.Args[4], os.Args[5]
	pem, err := os.ReadFile(caFile)
	if err != nil {
		panic(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		panic("no certificate in " + caFile)
	}
	cfg := &tls.Config{RootCAs: pool}
	if mode == "resume" {
		cfg.ClientSessionCache = tls.NewLRUClientSessionCache(64)
	}
	tr := &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: conns,
		MaxConnsPerHost: conns, DisableKeepAlives: mode != "keepalive",
		ForceAttemptHTTP2: false}
	c := &http.Client{Transport: tr}
	var left int64 = int64(n)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for atomic.AddInt64(&left, -1) >= 0 {
				res, err := c.Get(url)
				if err != nil {
					panic(err)
				}
				b, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if res.StatusCode != 200 || len(b) != 12 {
					panic("bad response")
				}
			}
		}()
	}
	wg.Wait()
	fmt.Printf("RESULT client requests %d seconds %.4f\n", n, time.Since(t0).Seconds())
}
