// etcd_load: a small load generator for `raft bench --compare` (raft/cli/compare_etcd.py).
//
// It opens -conns clientv3 clients (one gRPC connection each) and keeps -inflight Put
// requests outstanding per connection (one goroutine per outstanding request, each
// issuing its next Put when the previous one returns), for -duration, with -value-size
// byte values on -keys random keys. It prints one JSON object on stdout:
//
//	{"ops": N, "errors": E, "seconds": S, "ops_per_s": R,
//	 "latency_us": {"p50": .., "p90": .., "p99": .., "max": .., "mean": ..}}
//
// Built on demand by raft/cli/compare_etcd.py from Debian's golang-etcd-server-dev sources
// (GOPATH=/usr/share/gocode, GO111MODULE=off), never committed as a binary.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/clientv3"
)

type result struct {
	Ops       int64              `json:"ops"`
	Errors    int64              `json:"errors"`
	Seconds   float64            `json:"seconds"`
	OpsPerS   float64            `json:"ops_per_s"`
	LatencyUs map[string]float64 `json:"latency_us"`
	ErrSample string             `json:"error_sample,omitempty"`
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)) * p)
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated client URLs")
	conns := flag.Int("conns", 1, "client connections")
	inflight := flag.Int("inflight", 1, "requests in flight per connection")
	duration := flag.Duration("duration", 3*time.Second, "load duration")
	valueSize := flag.Int("value-size", 100, "value bytes")
	keys := flag.Int("keys", 10000, "key space size")
	seed := flag.Int64("seed", 1, "random seed for keys")
	flag.Parse()

	eps := strings.Split(*endpoints, ",")
	clients := make([]*clientv3.Client, *conns)
	for i := range clients {
		c, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, "etcd_load: connect:", err)
			os.Exit(2)
		}
		defer c.Close()
		clients[i] = c
	}
	value := strings.Repeat("v", *valueSize)
	var ops, errs int64
	var errSample atomic.Value
	lats := make([][]float64, *conns**inflight)
	start := time.Now()
	deadline := start.Add(*duration)
	var wg sync.WaitGroup
	for w := 0; w < *conns**inflight; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cli := clients[w%*conns]
			rng := rand.New(rand.NewSource(*seed + int64(w)))
			out := make([]float64, 0, 4096)
			for time.Now().Before(deadline) {
				key := fmt.Sprintf("key:%d", rng.Intn(*keys))
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				t0 := time.Now()
				_, err := cli.Put(ctx, key, value)
				d := time.Since(t0)
				cancel()
				if err != nil {
					atomic.AddInt64(&errs, 1)
					errSample.Store(err.Error())
					continue
				}
				atomic.AddInt64(&ops, 1)
				out = append(out, float64(d.Microseconds()))
			}
			lats[w] = out
		}(w)
	}
	wg.Wait()
	secs := time.Since(start).Seconds()
	all := make([]float64, 0, ops)
	sum := 0.0
	for _, l := range lats {
		for _, v := range l {
			all = append(all, v)
			sum += v
		}
	}
	sort.Float64s(all)
	mean := 0.0
	if len(all) > 0 {
		mean = sum / float64(len(all))
	}
	r := result{Ops: ops, Errors: errs, Seconds: secs, OpsPerS: float64(ops) / secs,
		LatencyUs: map[string]float64{
			"p50": percentile(all, 0.50), "p90": percentile(all, 0.90),
			"p99": percentile(all, 0.99), "max": percentile(all, 1.0), "mean": mean}}
	if s, ok := errSample.Load().(string); ok {
		r.ErrSample = s
	}
	json.NewEncoder(os.Stdout).Encode(r)
}
