package ship

import (
	"bytes"
	"testing"
	"unsafe"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
)

// frames cuts wire into buffers of at most size bytes, as the transport
// hands a message over (one per HTTP/2 data frame).
func frames(wire []byte, size int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(wire) > 0 {
		n := min(len(wire), size)
		s = append(s, mem.SliceBuffer(wire[:n]))
		wire = wire[n:]
	}
	return s
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func chunkMsg(c *logsv1.Chunk) *logsv1.ShipRequest {
	return &logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Chunk{Chunk: c}}
}

// TestDecodeChunk: a chunk message as a marshaller writes it is decoded
// from its frames, whatever their sizes, into what proto.Unmarshal gives,
// its bytes in a slice of their own; any other message is left to proto.
func TestDecodeChunk(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), (32<<10-256)/16)
	full := marshal(t, chunkMsg(&logsv1.Chunk{Sequence: 7, Stream: logsv1.Stream_STREAM_STDERR, Data: data, TimeUnixMs: -5}))
	unknown := protowire.AppendTag(marshal(t, &logsv1.Chunk{Sequence: 1, Data: []byte("x")}), 9, protowire.VarintType)
	unknown = protowire.AppendVarint(unknown, 3)
	twice := protowire.AppendTag(marshal(t, &logsv1.Chunk{Sequence: 1}), 1, protowire.VarintType)
	twice = protowire.AppendVarint(twice, 2)
	wrongType := protowire.AppendTag(nil, 1, protowire.BytesType)
	wrongType = protowire.AppendBytes(wrongType, []byte("x"))
	wrap := func(chunk []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), chunk)
	}
	for _, tc := range []struct {
		name   string
		wire   []byte
		frame  int
		decode bool // by decodeChunk, not left to proto
	}{
		{"full chunk in 16 KiB frames", full, 16 << 10, true},
		{"full chunk in one buffer", full, 1 << 20, true},
		{"full chunk in 7-byte frames", full, 7, true},
		{"empty chunk", marshal(t, chunkMsg(&logsv1.Chunk{})), 16 << 10, true},
		{"sequence only", marshal(t, chunkMsg(&logsv1.Chunk{Sequence: 1 << 40})), 1, true},
		{"open", marshal(t, &logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: &logsv1.Open{RunId: "r"}}}), 16 << 10, false},
		{"close", marshal(t, &logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Close{Close: &logsv1.Close{LastSequence: 3}}}), 16 << 10, false},
		{"unknown field in the chunk", wrap(unknown), 16 << 10, false},
		{"a field twice", wrap(twice), 16 << 10, false},
		{"a field of another wire type", wrap(wrongType), 16 << 10, false},
		{"chunk field twice", append(slices(full), full...), 16 << 10, false},
		{"truncated", full[:len(full)-1], 16 << 10, false},
		{"empty message", nil, 16 << 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			want := &logsv1.ShipRequest{}
			wantErr := proto.Unmarshal(tc.wire, want)
			got := &logsv1.ShipRequest{}
			if decoded := decodeChunk(frames(tc.wire, tc.frame), got); decoded != tc.decode {
				t.Fatalf("decoded %v, want %v", decoded, tc.decode)
			}
			if !tc.decode {
				return
			}
			if wantErr != nil || !proto.Equal(got, want) {
				t.Fatalf("decoded %v, proto gives %v (err %v)", got, want, wantErr)
			}
			if d := got.GetChunk().GetData(); len(d) > 0 {
				// The message's buffers go back to the pool: the bytes must not be in them.
				first, last := uintptr(unsafe.Pointer(&tc.wire[0])), uintptr(unsafe.Pointer(&tc.wire[len(tc.wire)-1]))
				if p := uintptr(unsafe.Pointer(&d[0])); p >= first && p <= last {
					t.Error("the chunk's bytes are in the message's buffer")
				}
			}
		})
	}
}

func slices(b []byte) []byte { return append([]byte(nil), b...) }

// FuzzDecodeChunk: for any message and any cut into frames, decodeChunk
// either leaves it to proto or gives exactly what proto.Unmarshal gives.
func FuzzDecodeChunk(f *testing.F) {
	f.Add(marshal(f, chunkMsg(&logsv1.Chunk{Sequence: 7, Stream: logsv1.Stream_STREAM_STDOUT, Data: []byte("hello\n"), TimeUnixMs: 1700000000000})), uint8(3))
	f.Add(marshal(f, chunkMsg(&logsv1.Chunk{Data: bytes.Repeat([]byte("a"), 300)})), uint8(100))
	f.Add(marshal(f, &logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: &logsv1.Open{RunId: "r"}}}), uint8(1))
	f.Add([]byte{0x12, 0x02, 0x08, 0x80}, uint8(1))
	f.Fuzz(func(t *testing.T, wire []byte, frame uint8) {
		got := &logsv1.ShipRequest{}
		if !decodeChunk(frames(wire, int(frame)+1), got) {
			return
		}
		want := &logsv1.ShipRequest{}
		if err := proto.Unmarshal(wire, want); err != nil {
			t.Fatalf("decoded %v, proto refuses it: %v", got, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("decoded %v, proto gives %v", got, want)
		}
	})
}

// BenchmarkUnmarshalChunk: one chunk message of 32 KiB less 256 bytes (the
// executor's) in 16 KiB frames, through the codec (decodeChunk) and as
// before it (materialized into a pool buffer, then proto.Unmarshal).
func BenchmarkUnmarshalChunk(b *testing.B) {
	wire := marshal(b, chunkMsg(&logsv1.Chunk{Sequence: 7, Data: bytes.Repeat([]byte("y\n"), (32<<10-256)/2), TimeUnixMs: 1}))
	msg := frames(wire, 16<<10)
	c := protoCodec{pool: newChunkPool()}
	b.Run("codec", func(b *testing.B) {
		b.SetBytes(int64(len(wire)))
		b.ReportAllocs()
		for b.Loop() {
			var m logsv1.ShipRequest
			if err := c.Unmarshal(msg, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("materialize-proto", func(b *testing.B) {
		b.SetBytes(int64(len(wire)))
		b.ReportAllocs()
		for b.Loop() {
			var m logsv1.ShipRequest
			buf := msg.MaterializeToBuffer(c.pool)
			if err := proto.Unmarshal(buf.ReadOnlyData(), &m); err != nil {
				b.Fatal(err)
			}
			buf.Free()
		}
	})
}
