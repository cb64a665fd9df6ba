// client.go N CONNS URL: N keep-alive GETs from CONNS goroutines through
// one net/http client (run with GOMAXPROCS=1); prints like client.lua.
package main

import (
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
	url := os.Args[3]
	tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}
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
