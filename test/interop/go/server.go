package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"bunwasi/interop/echopb"
)

// echoServer implements echopb.EchoService with the semantics documented in
// echo.proto. Every response carries the call's metadata and deadline so a
// client can check what reached the server on any RPC kind.
type echoServer struct{}

// callInfo is what the server saw when a call began.
type callInfo struct {
	metadata     []*echopb.KeyValue
	deadlineLeft int64
}

func newCallInfo(ctx context.Context) callInfo {
	var ci callInfo
	if dl, ok := ctx.Deadline(); ok {
		ci.deadlineLeft = int64(time.Until(dl))
		if ci.deadlineLeft <= 0 {
			ci.deadlineLeft = 1 // "had a deadline, already passed"; 0 means none
		}
	}
	md, ok := ttrpc.GetMetadata(ctx)
	if !ok || len(md) == 0 {
		return ci
	}
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, v := range md[k] {
			ci.metadata = append(ci.metadata, &echopb.KeyValue{Key: k, Value: v})
		}
	}
	return ci
}

func (ci callInfo) response(payload []byte, seq uint32) *echopb.EchoResponse {
	return &echopb.EchoResponse{
		Payload:          payload,
		Seq:              seq,
		Metadata:         ci.metadata,
		DeadlineLeftNano: ci.deadlineLeft,
	}
}

// failOrSleep applies a request's fail_code, then its sleep_ms (cut short by
// cancellation, in which case the context error is returned for ttrpc to map
// to CANCELLED / DEADLINE_EXCEEDED).
func failOrSleep(ctx context.Context, req *echopb.EchoRequest) error {
	if req.FailCode != 0 {
		return status.Error(codes.Code(req.FailCode), req.FailMessage)
	}
	if req.SleepMs > 0 {
		t := time.NewTimer(time.Duration(req.SleepMs) * time.Millisecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (echoServer) Unary(ctx context.Context, req *echopb.EchoRequest) (*echopb.EchoResponse, error) {
	ci := newCallInfo(ctx)
	if req.FailCode != 0 || req.SleepMs != 0 {
		if err := failOrSleep(ctx, req); err != nil {
			return nil, err
		}
	}
	return ci.response(req.Payload, 0), nil
}

func (echoServer) ClientStream(ctx context.Context, stream echopb.Echo_ClientStreamServer) (*echopb.EchoResponse, error) {
	ci := newCallInfo(ctx)
	var all []byte
	var n uint32
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if err := failOrSleep(ctx, req); err != nil {
			return nil, err
		}
		all = append(all, req.Payload...)
		n++
	}
	return ci.response(all, n), nil
}

func (echoServer) ServerStream(ctx context.Context, req *echopb.EchoRequest, stream echopb.Echo_ServerStreamServer) error {
	ci := newCallInfo(ctx)
	if err := failOrSleep(ctx, req); err != nil {
		return err
	}
	for i := uint32(0); i < req.Repeat; i++ {
		if err := stream.Send(ci.response(req.Payload, i)); err != nil {
			return err
		}
	}
	return nil
}

func (echoServer) Bidi(ctx context.Context, stream echopb.Echo_BidiServer) error {
	ci := newCallInfo(ctx)
	for seq := uint32(0); ; seq++ {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := failOrSleep(ctx, req); err != nil {
			return err
		}
		if err := stream.Send(ci.response(req.Payload, seq)); err != nil {
			return err
		}
	}
}

func runServer(args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	socket := fs.String("socket", "", "unix socket path to listen on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *socket == "" {
		return errors.New("-socket is required")
	}
	if err := os.Remove(*socket); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	l, err := net.Listen("unix", *socket)
	if err != nil {
		return err
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	echopb.RegisterEchoService(srv, echoServer{})

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background(), l) }()
	fmt.Println("READY")

	select {
	case <-sigs:
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
		}
		os.Remove(*socket)
		return nil
	case err := <-served:
		os.Remove(*socket)
		if errors.Is(err, ttrpc.ErrServerClosed) {
			return nil
		}
		return err
	}
}
