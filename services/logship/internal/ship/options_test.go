package ship

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
)

// TestChunkPool: a chunk message, and a data frame of the transport
// (16 KiB), gets a buffer of the pool's own (not zeroed), of the smallest
// of its sizes that fits (a 64 KiB chunk no longer the default pool's
// 1 MiB, zeroed at each Get), given back and taken again; other sizes
// come from the default pool.
func TestChunkPool(t *testing.T) {
	p := newChunkPool()
	for _, tc := range []struct {
		n       int
		wantCap int
		own     bool // from the pool's own sizes, not zeroed
	}{
		{32<<10 - 256 + 32, 32 << 10, true}, // logclient.MaxChunk and the fields
		{16<<10 + 1, 32 << 10, true},
		{64<<10 + 64, 128 << 10, true},
		{128 << 10, 128 << 10, true},
		{40 << 10, 64 << 10, true},
		{100, 256, false},
		{4 << 10, 4 << 10, false},
		{16 << 10, 16 << 10, true}, // a full data frame
		{4<<10 + 1, 16 << 10, true},
		{200 << 10, 1 << 20, false},
	} {
		b := p.Get(tc.n)
		if len(*b) != tc.n || cap(*b) != tc.wantCap {
			t.Errorf("Get(%d): len %d cap %d, want cap %d", tc.n, len(*b), cap(*b), tc.wantCap)
		}
		if own := p.tier(tc.n) >= 0; own != tc.own {
			t.Errorf("Get(%d): from the pool's own sizes %v, want %v", tc.n, own, tc.own)
		}
		p.Put(b)
	}
}

// TestProtoCodec: chunk messages read one after another through the
// codec, a shorter one after a longer one in a buffer that is not
// zeroed, come out whole and exact, whatever the slices they arrive in.
func TestProtoCodec(t *testing.T) {
	c := protoCodec{pool: newChunkPool()}
	for i, size := range []int{64 << 10, 40 << 10, 64 << 10, 33 << 10, 10} {
		data := bytes.Repeat([]byte{byte('a' + i)}, size)
		in := &logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Chunk{Chunk: &logsv1.Chunk{Sequence: uint64(i + 1), Data: data}}}
		wire, err := c.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		// As the transport hands it over: in frames of at most 16 KiB.
		flat := wire.Materialize()
		wire.Free()
		var frames mem.BufferSlice
		for len(flat) > 0 {
			n := min(len(flat), 16<<10)
			frames = append(frames, mem.SliceBuffer(flat[:n]))
			flat = flat[n:]
		}
		var out logsv1.ShipRequest
		if err := c.Unmarshal(frames, &out); err != nil {
			t.Fatal(err)
		}
		if got := out.GetChunk(); got.GetSequence() != uint64(i+1) || !bytes.Equal(got.GetData(), data) {
			t.Fatalf("message %d (%d bytes): sequence %d, %d bytes back, equal %v", i, size, got.GetSequence(), len(got.GetData()), bytes.Equal(got.GetData(), data))
		}
	}
	if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{1})}, "not a message"); err == nil {
		t.Error("Unmarshal into a string: no error")
	}
}
