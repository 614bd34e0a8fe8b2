package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/ttrpc"

	"bunwasi/interop/echopb"
)

type benchResult struct {
	Conns       int     `json:"conns"`
	Inflight    int     `json:"inflight"`
	Size        int     `json:"size"`
	Calls       int     `json:"calls"`
	Errors      int64   `json:"errors"`
	Seconds     float64 `json:"seconds"`
	CallsPerSec float64 `json:"calls_per_sec"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
}

func runBench(args []string) error {
	fs := flag.NewFlagSet("bench-client", flag.ContinueOnError)
	socket := fs.String("socket", "", "unix socket path of the server")
	conns := fs.Int("conns", 1, "client connections")
	inflight := fs.Int("inflight", 1, "concurrent callers per connection")
	duration := fs.Duration("duration", 5*time.Second, "measured duration")
	warmup := fs.Duration("warmup", time.Second, "unmeasured warm-up before measuring")
	size := fs.Int("size", 1024, "payload bytes per call")
	verbose := fs.Bool("v", false, "let the ttrpc library log to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	quietLibrary(*verbose)
	if *socket == "" || *conns < 1 || *inflight < 1 || *duration <= 0 {
		return errors.New("need -socket, -conns >= 1, -inflight >= 1, -duration > 0")
	}

	ctx := context.Background()
	clients := make([]*ttrpc.Client, *conns)
	for i := range clients {
		conn, err := dial(ctx, *socket)
		if err != nil {
			return err
		}
		clients[i] = ttrpc.NewClient(conn)
		defer clients[i].Close()
	}
	payload := patterned(*size)

	var (
		measuring atomic.Bool
		stop      atomic.Bool
		errCount  atomic.Int64
		firstErr  atomic.Value
		wg        sync.WaitGroup
		lats      = make([][]time.Duration, *conns**inflight)
	)
	for ci, c := range clients {
		echo := echopb.NewEchoClient(c)
		for j := 0; j < *inflight; j++ {
			w := ci**inflight + j
			wg.Add(1)
			go func() {
				defer wg.Done()
				mine := make([]time.Duration, 0, 1<<14)
				req := &echopb.EchoRequest{Payload: payload}
				for !stop.Load() {
					t0 := time.Now()
					_, err := echo.Unary(ctx, req)
					d := time.Since(t0)
					if !measuring.Load() {
						continue
					}
					if err != nil {
						errCount.Add(1)
						firstErr.CompareAndSwap(nil, err.Error())
						continue
					}
					mine = append(mine, d)
				}
				lats[w] = mine
			}()
		}
	}

	time.Sleep(*warmup)
	measuring.Store(true)
	start := time.Now()
	time.Sleep(*duration)
	measuring.Store(false)
	elapsed := time.Since(start)
	stop.Store(true)
	wg.Wait()

	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		i := int(math.Ceil(p*float64(len(all)))) - 1
		i = max(0, min(i, len(all)-1))
		return math.Round(float64(all[i].Nanoseconds())/10) / 100 // µs, 2 decimals
	}
	secs := elapsed.Seconds()
	res := benchResult{
		Conns: *conns, Inflight: *inflight, Size: *size,
		Calls: len(all), Errors: errCount.Load(), Seconds: math.Round(secs*1000) / 1000,
		CallsPerSec: math.Round(float64(len(all)) / secs),
		P50us:       pct(0.50), P99us: pct(0.99),
	}
	if err := json.NewEncoder(os.Stdout).Encode(res); err != nil {
		return err
	}
	if e := firstErr.Load(); e != nil {
		fmt.Fprintf(os.Stderr, "bench-client: %d errors, first: %s\n", res.Errors, e)
	}
	return nil
}
