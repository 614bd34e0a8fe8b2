package main

// Scenarios that need frames the Go ttrpc client will never produce, written
// directly on the socket: an oversized frame (the Go client refuses to send
// one) and a data frame on a stream that was never opened.

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"

	"bunwasi/interop/echopb"
)

const (
	frameRequest  = 1
	frameResponse = 2
	frameData     = 3
	headerLen     = 10
)

type frame struct {
	length   uint32
	streamID uint32
	typ      byte
	flags    byte
	payload  []byte
}

func writeFrame(conn net.Conn, streamID uint32, typ, flags byte, payload []byte, claimedLen int) error {
	var h [headerLen]byte
	binary.BigEndian.PutUint32(h[0:4], uint32(claimedLen))
	binary.BigEndian.PutUint32(h[4:8], streamID)
	h[8], h[9] = typ, flags
	if _, err := conn.Write(h[:]); err != nil {
		return err
	}
	_, err := conn.Write(payload)
	return err
}

func readFrame(conn net.Conn, timeout time.Duration) (frame, error) {
	conn.SetReadDeadline(time.Now().Add(timeout))
	defer conn.SetReadDeadline(time.Time{})
	var h [headerLen]byte
	if _, err := io.ReadFull(conn, h[:]); err != nil {
		return frame{}, err
	}
	f := frame{
		length:   binary.BigEndian.Uint32(h[0:4]),
		streamID: binary.BigEndian.Uint32(h[4:8]),
		typ:      h[8],
		flags:    h[9],
	}
	if f.length > 16*mib {
		return f, fmt.Errorf("absurd frame length %d", f.length)
	}
	f.payload = make([]byte, f.length)
	_, err := io.ReadFull(conn, f.payload)
	return f, err
}

// rawObs reports the first frame the server sent back and whether the
// connection still served a normal Unary call afterwards.
type rawObs struct {
	Type     int    `json:"type"`      // frame type of the reply (2 = response)
	StreamID uint32 `json:"stream_id"` // stream the reply came on
	Code     int    `json:"code"`
	Message  string `json:"message"`
	Closed   bool   `json:"closed"` // server closed the connection instead of replying
	After    string `json:"after"`  // "ok" or what went wrong with the follow-up call
}

func (o *rawObs) fromFrame(f frame) {
	o.Type, o.StreamID = int(f.typ), f.streamID
	if f.typ != frameResponse {
		o.Message = fmt.Sprintf("non-response frame, flags %#x, %d bytes", f.flags, len(f.payload))
		return
	}
	var resp ttrpc.Response
	if err := proto.Unmarshal(f.payload, &resp); err != nil {
		o.Message = "undecodable response: " + err.Error()
		return
	}
	if resp.Status != nil {
		o.Code, o.Message = int(resp.Status.Code), resp.Status.Message
	}
}

// followUp sends a well-formed Unary request on streamID and checks the echo.
func followUp(conn net.Conn, streamID uint32) string {
	inner, _ := proto.Marshal(&echopb.EchoRequest{Payload: []byte("after")})
	req, _ := proto.Marshal(&ttrpc.Request{Service: echoService, Method: "Unary", Payload: inner})
	if err := writeFrame(conn, streamID, frameRequest, 0, req, len(req)); err != nil {
		return "write: " + err.Error()
	}
	for {
		f, err := readFrame(conn, 5*time.Second)
		if err != nil {
			return "read: " + err.Error()
		}
		if f.streamID != streamID {
			continue // a late reply to something earlier
		}
		var resp ttrpc.Response
		if err := proto.Unmarshal(f.payload, &resp); err != nil {
			return "decode response: " + err.Error()
		}
		if resp.Status != nil && resp.Status.Code != 0 {
			return fmt.Sprintf("status %d: %s", resp.Status.Code, resp.Status.Message)
		}
		var er echopb.EchoResponse
		if err := proto.Unmarshal(resp.Payload, &er); err != nil {
			return "decode echo: " + err.Error()
		}
		if string(er.Payload) != "after" {
			return fmt.Sprintf("wrong payload %q", er.Payload)
		}
		return "ok"
	}
}

func rawScenario(ctx context.Context, socket string, send func(net.Conn) error, next uint32) (any, error) {
	conn, err := dial(ctx, socket)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var obs rawObs
	if err := send(conn); err != nil {
		obs.Closed, obs.Message, obs.After = true, "write: "+err.Error(), "not tried"
		return obs, nil
	}
	f, err := readFrame(conn, 5*time.Second)
	if err != nil {
		obs.Closed, obs.Message, obs.After = true, "read: "+err.Error(), "not tried"
		return obs, nil
	}
	obs.fromFrame(f)
	obs.After = followUp(conn, next)
	return obs, nil
}

// caseOversizeRaw sends a 5 MiB request frame on stream 1 (header and body
// written in full), then a normal call on stream 3.
func caseOversizeRaw(ctx context.Context, socket string) (any, error) {
	return rawScenario(ctx, socket, func(conn net.Conn) error {
		body := patterned(5 * mib)
		// Write concurrently with reading is not needed: the peer is
		// expected to drain the body before replying.
		return writeFrame(conn, 1, frameRequest, 0, body, len(body))
	}, 3)
}

// caseDataUnknownStream sends a data frame on stream 99, which was never
// opened, then a normal call on stream 101.
func caseDataUnknownStream(ctx context.Context, socket string) (any, error) {
	return rawScenario(ctx, socket, func(conn net.Conn) error {
		body, _ := proto.Marshal(&echopb.EchoRequest{Payload: []byte("orphan")})
		return writeFrame(conn, 99, frameData, 0, body, len(body))
	}, 101)
}
