package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"bunwasi/interop/echopb"
)

const (
	echoService = "bunwasi.interop.v1.Echo"
	mib         = 1 << 20
)

// A clientCase runs one scenario against the server at socket and returns
// the JSON-encodable observation. A non-nil error means the scenario could
// not be carried out (connection failure, protocol breakage, wrong shape);
// an error *status* returned by the server is an observation, not an error.
type clientCase func(ctx context.Context, socket string) (any, error)

var cases = map[string]clientCase{
	"unary":               caseUnary,
	"unary-large":         caseUnaryLarge,
	"oversize":            caseOversize,
	"error":               caseError,
	"deadline":            caseDeadline,
	"deadline-seen":       caseDeadlineSeen,
	"deadline-server":     caseDeadlineServer,
	"unknown-service":     caseUnknownService,
	"unknown-method":      caseUnknownMethod,
	"client-stream":       caseClientStream,
	"server-stream":       caseServerStream,
	"bidi":                caseBidi,
	"concurrent":          caseConcurrent,
	"oversize-raw":        caseOversizeRaw,
	"data-unknown-stream": caseDataUnknownStream,
}

func caseNames() []string {
	names := make([]string, 0, len(cases))
	for n := range cases {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func runClient(args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	socket := fs.String("socket", "", "unix socket path of the server")
	name := fs.String("case", "", "scenario to run (see `ttrpc-peer cases`)")
	timeout := fs.Duration("timeout", 30*time.Second, "overall limit for the scenario")
	verbose := fs.Bool("v", false, "let the ttrpc library log to stderr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	quietLibrary(*verbose)
	if *socket == "" || *name == "" {
		return errors.New("-socket and -case are required")
	}
	run, ok := cases[*name]
	if !ok {
		return fmt.Errorf("unknown case %q (known: %v)", *name, caseNames())
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	out, err := run(ctx, *socket)
	if err != nil {
		return fmt.Errorf("case %s: %w", *name, err)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetEscapeHTML(false)
	return enc.Encode(out)
}

// quietLibrary silences ttrpc's own logging (e.g. "received message on
// inactive stream" when a reply arrives after the caller gave up), so that
// stderr carries only our failure message unless -v is given.
func quietLibrary(verbose bool) {
	if !verbose {
		log.SetLevel("panic")
	}
}

// dial connects to the unix socket, retrying briefly while the server starts.
func dial(ctx context.Context, socket string) (net.Conn, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "unix", socket)
		if err == nil {
			return conn, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func newClient(ctx context.Context, socket string) (*ttrpc.Client, echopb.EchoClient, error) {
	conn, err := dial(ctx, socket)
	if err != nil {
		return nil, nil, err
	}
	c := ttrpc.NewClient(conn)
	return c, echopb.NewEchoClient(c), nil
}

// errorObs is how a failed call is reported.
type errorObs struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	// Source: "status" = a status the peer sent (or ttrpc's local status
	// errors such as the oversize refusal), "context" = the client's own
	// context expired, "local" = some other Go error.
	Source string `json:"source"`
}

func observeError(err error) errorObs {
	if err == nil {
		return errorObs{Code: 0, Source: "none"}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		st := status.FromContextError(err)
		return errorObs{Code: int(st.Code()), Message: st.Message(), Source: "context"}
	}
	if st, ok := status.FromError(err); ok {
		return errorObs{Code: int(st.Code()), Message: st.Message(), Source: "status"}
	}
	return errorObs{Code: int(codes.Unknown), Message: err.Error(), Source: "local"}
}

type kv struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

func kvs(md []*echopb.KeyValue) []kv {
	out := make([]kv, 0, len(md))
	for _, p := range md {
		out = append(out, kv{p.Key, p.Value})
	}
	return out
}

func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func caseUnary(ctx context.Context, socket string) (any, error) {
	c, echo, err := newClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	md := ttrpc.MD{}
	md.Append("k1", "a", "b")
	md.Append("k2", "c")
	resp, err := echo.Unary(ttrpc.WithMetadata(ctx, md), &echopb.EchoRequest{Payload: []byte("hello")})
	if err != nil {
		return nil, err
	}
	return struct {
		Payload  string `json:"payload"`
		Seq      uint32 `json:"seq"`
		Metadata []kv   `json:"metadata"`
	}{string(resp.Payload), resp.Seq, kvs(resp.Metadata)}, nil
}

func caseUnaryLarge(ctx context.Context, socket string) (any, error) {
	c, echo, err := newClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	payload := patterned(3 * mib)
	resp, err := echo.Unary(ctx, &echopb.EchoRequest{Payload: payload})
	if err != nil {
		return nil, err
	}
	return struct {
		Len int  `json:"len"`
		OK  bool `json:"ok"`
	}{len(resp.Payload), bytes.Equal(resp.Payload, payload)}, nil
}

func caseOversize(ctx context.Context, socket string) (any, error) {
	c, echo, err := newClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_, err = echo.Unary(ctx, &echopb.EchoRequest{Payload: patterned(5 * mib)})
	obs := observeError(err)
	after := "ok"
	resp, err := echo.Unary(ctx, &echopb.EchoRequest{Payload: []byte("after")})
	if err != nil {
		after = err.Error()
	} else if string(resp.Payload) != "after" {
		after = fmt.Sprintf("wrong payload %q", resp.Payload)
	}
	return struct {
		errorObs
		After string `json:"after"`
	}{obs, after}, nil
}

func caseError(ctx context.Context, socket string) (any, error) {
	c, echo, err := newClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_, err = echo.Unary(ctx, &echopb.EchoRequest{FailCode: int32(codes.NotFound), FailMessage: "no such thing"})
	return observeError(err), nil
}

func caseDeadline(ctx context.Context, socket string) (any, error) {
	c, echo, err := newClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = echo.Unary(cctx, &echopb.EchoRequest{Payload: []byte("late"), SleepMs: 2000})
	elapsed := time.Since(start)
	// Make sure the connection is still usable afterwards.
	after := "ok"
	if _, aerr := echo.Unary(ctx, &echopb.EchoRequest{Payload: []byte("x")}); aerr != nil {
		after = aerr.Error()
	}
	return struct {
		errorObs
		ElapsedMs int64  `json:"elapsed_ms"`
		After     string `json:"after"`
	}{observeError(err), elapsed.Milliseconds(), after}, nil
}

// caseDeadlineServer checks that the *server* enforces timeout_nano: the
// request says 200ms but the client's own context allows 5s, so only the
// server can end the call early.
func caseDeadlineServer(ctx context.Context, socket string) (any, error) {
	conn, err := dial(ctx, socket)
	if err != nil {
		return nil, err
	}
	c := ttrpc.NewClient(conn, ttrpc.WithUnaryClientInterceptor(
		func(ctx context.Context, req *ttrpc.Request, resp *ttrpc.Response, _ *ttrpc.UnaryClientInfo, invoke ttrpc.Invoker) error {
			if req.Method == "Unary" && req.Service == echoService {
				req.TimeoutNano = int64(200 * time.Millisecond)
			}
			return invoke(ctx, req, resp)
		}))
	defer c.Close()
	echo := echopb.NewEchoClient(c)
	start := time.Now()
	_, err = echo.Unary(ctx, &echopb.EchoRequest{Payload: []byte("late"), SleepMs: 2000})
	elapsed := time.Since(start)
	after := "ok"
	if _, aerr := echo.Unary(ctx, &echopb.EchoRequest{Payload: []byte("x")}); aerr != nil {
		after = aerr.Error()
	}
	return struct {
		errorObs
		ElapsedMs int64  `json:"elapsed_ms"`
		After     string `json:"after"`
	}{observeError(err), elapsed.Milliseconds(), after}, nil
}

func caseDeadlineSeen(ctx context.Context, socket string) (any, error) {
	c, echo, err := newClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := echo.Unary(cctx, &echopb.EchoRequest{Payload: []byte("d")})
	if err != nil {
		return nil, err
	}
	return struct {
		DeadlineLeftNano int64 `json:"deadline_left_nano"`
	}{resp.DeadlineLeftNano}, nil
}

func callRaw(ctx context.Context, socket, service, method string) (any, error) {
	c, echo, err := newClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var resp echopb.EchoResponse
	err = c.Call(ctx, service, method, &echopb.EchoRequest{Payload: []byte("?")}, &resp)
	obs := observeError(err)
	after := "ok"
	if _, aerr := echo.Unary(ctx, &echopb.EchoRequest{Payload: []byte("x")}); aerr != nil {
		after = aerr.Error()
	}
	return struct {
		errorObs
		After string `json:"after"`
	}{obs, after}, nil
}

func caseUnknownService(ctx context.Context, socket string) (any, error) {
	return callRaw(ctx, socket, "no.such.Service", "X")
}

func caseUnknownMethod(ctx context.Context, socket string) (any, error) {
	return callRaw(ctx, socket, echoService, "Nope")
}

func caseClientStream(ctx context.Context, socket string) (any, error) {
	c, echo, err := newClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st, err := echo.ClientStream(ctx)
	if err != nil {
		return nil, err
	}
	for _, p := range []string{"a", "b", "c"} {
		if err := st.Send(&echopb.EchoRequest{Payload: []byte(p)}); err != nil {
			return nil, fmt.Errorf("send %q: %w", p, err)
		}
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	return struct {
		Payload string `json:"payload"`
		Seq     uint32 `json:"seq"`
	}{string(resp.Payload), resp.Seq}, nil
}

func caseServerStream(ctx context.Context, socket string) (any, error) {
	c, echo, err := newClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st, err := echo.ServerStream(ctx, &echopb.EchoRequest{Payload: []byte("x"), Repeat: 5})
	if err != nil {
		return nil, err
	}
	out := struct {
		Seqs     []uint32 `json:"seqs"`
		Payloads []string `json:"payloads"`
	}{Seqs: []uint32{}, Payloads: []string{}}
	for {
		resp, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("recv after %d messages: %w", len(out.Seqs), err)
		}
		out.Seqs = append(out.Seqs, resp.Seq)
		out.Payloads = append(out.Payloads, string(resp.Payload))
	}
	return out, nil
}

func caseBidi(ctx context.Context, socket string) (any, error) {
	c, echo, err := newClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	st, err := echo.Bidi(ctx)
	if err != nil {
		return nil, err
	}
	out := struct {
		Payloads []string `json:"payloads"`
		Seqs     []uint32 `json:"seqs"`
		End      string   `json:"end"`
	}{Payloads: []string{}, Seqs: []uint32{}}
	for i := 1; i <= 10; i++ {
		if err := st.Send(&echopb.EchoRequest{Payload: []byte(strconv.Itoa(i))}); err != nil {
			return nil, fmt.Errorf("send %d: %w", i, err)
		}
		resp, err := st.Recv()
		if err != nil {
			return nil, fmt.Errorf("recv %d: %w", i, err)
		}
		out.Payloads = append(out.Payloads, string(resp.Payload))
		out.Seqs = append(out.Seqs, resp.Seq)
	}
	if err := st.CloseSend(); err != nil {
		return nil, fmt.Errorf("close send: %w", err)
	}
	// After our close the server must end the stream cleanly.
	if _, err := st.Recv(); errors.Is(err, io.EOF) {
		out.End = "eof"
	} else if err != nil {
		out.End = err.Error()
	} else {
		out.End = "unexpected message"
	}
	return out, nil
}

func caseConcurrent(ctx context.Context, socket string) (any, error) {
	c, echo, err := newClient(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	const n = 1000
	var (
		mu                   sync.Mutex
		ok, mismatched, errs int
		firstErr             string
		wg                   sync.WaitGroup
	)
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			want := strconv.Itoa(i)
			resp, err := echo.Unary(ctx, &echopb.EchoRequest{Payload: []byte(want)})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err != nil:
				errs++
				if firstErr == "" {
					firstErr = err.Error()
				}
			case string(resp.Payload) != want:
				mismatched++
			default:
				ok++
			}
		}(i)
	}
	wg.Wait()
	return struct {
		OK         int    `json:"ok"`
		Mismatched int    `json:"mismatched"`
		Errors     int    `json:"errors"`
		ElapsedMs  int64  `json:"elapsed_ms"`
		FirstError string `json:"first_error,omitempty"`
	}{ok, mismatched, errs, time.Since(start).Milliseconds(), firstErr}, nil
}
