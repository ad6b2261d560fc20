package logclient

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
)

// TestSendCodecMarshalsExactly: messages marshalled one after another,
// each given back before the next (so a shorter one lands in a reused
// buffer that is not zeroed), are byte for byte what proto.Marshal gives.
func TestSendCodecMarshalsExactly(t *testing.T) {
	c := newSendCodec()
	for i, tc := range []struct {
		name string
		msg  *logsv1.ShipRequest
	}{
		{"full chunk", chunkRequest(1, MaxChunk, 'a')},
		{"short chunk", chunkRequest(2, 100, 'b')},
		{"open", &logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: &logsv1.Open{RunId: "r1"}}}},
		{"full chunk again", chunkRequest(3, MaxChunk, 'c')},
		{"empty chunk", chunkRequest(4, 0, 'd')},
		{"larger than the pool's buffers", chunkRequest(5, 64<<10, 'e')},
		{"close", &logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Close{Close: &logsv1.Close{}}}},
	} {
		got, err := c.Marshal(tc.msg)
		if err != nil {
			t.Fatalf("%d %s: %v", i, tc.name, err)
		}
		want, err := proto.Marshal(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		if flat := got.Materialize(); !bytes.Equal(flat, want) {
			t.Errorf("%d %s: %d bytes marshalled, want %d, equal %v", i, tc.name, len(flat), len(want), bytes.Equal(flat, want))
		}
		got.Free()
	}
	if _, err := c.Marshal("not a message"); err == nil {
		t.Error("Marshal of a string: no error")
	}
}

func chunkRequest(seq uint64, n int, b byte) *logsv1.ShipRequest {
	return &logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Chunk{Chunk: &logsv1.Chunk{Sequence: seq, Data: bytes.Repeat([]byte{b}, n)}}}
}

// codecSpy records whether each Ship call was given the Stream's
// sendCodec.
type codecSpy struct {
	Client
	calls, withCodec int
}

func (c *codecSpy) Ship(ctx context.Context, opts ...grpc.CallOption) (logsv1.LogService_ShipClient, error) {
	c.calls++
	for _, o := range opts {
		if f, ok := o.(grpc.ForceCodecV2CallOption); ok {
			if _, ok := f.CodecV2.(sendCodec); ok {
				c.withCodec++
			}
		}
	}
	return c.Client.Ship(ctx, opts...)
}

// TestStreamSendsThroughSendCodec: every Ship stream of a Stream (the
// reopened one too) marshals with its sendCodec, and the log arrives
// byte for byte.
func TestStreamSendsThroughSendCodec(t *testing.T) {
	srv := &store{breakIn: 5}
	spy := &codecSpy{Client: serveStore(t, srv)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := Open(ctx, spy, &logsv1.Open{RunId: "r"}, Options{})
	var want bytes.Buffer
	w := st.Writer(logsv1.Stream_STREAM_STDOUT)
	for i := range 200 {
		p := bytes.Repeat([]byte{byte('a' + i%26)}, 1+i*173%(40<<10))
		want.Write(p)
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := st.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if spy.calls < 2 || spy.withCodec != spy.calls {
		t.Errorf("%d Ship streams, %d with the Stream's codec; want at least 2 (one reopened), all with it", spy.calls, spy.withCodec)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if !bytes.Equal(srv.data.Bytes(), want.Bytes()) {
		t.Errorf("stored %d bytes, want %d, equal %v", srv.data.Len(), want.Len(), bytes.Equal(srv.data.Bytes(), want.Bytes()))
	}
}
