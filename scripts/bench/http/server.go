// SPDX-License-Identifier: MIT
// server.go PORT -- the Go net/http side of scripts/bench/http.sh.
package main

import (
	"encoding/json"
	"net/http"
	"os"
	"runtime"
)

type payload struct {
	ID     int    `json:"id"`
	Status string `json:"status"`
	Items  []int  `json:"items"`
}

func main() {
	runtime.GOMAXPROCS(1)
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("hello world"))
	})
	http.HandleFunc("/json", func(w http.ResponseWriter, r *http.Request) {
		b, _ := json.Marshal(payload{ID: 123, Status: "ok", Items: []int{1, 2, 3}})
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		panic(err)
	}
}
