package ship

import (
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
)

// ServerOptions are the options Ship wants of the gRPC server it is
// registered on: messages are read into buffers of a pool that does not
// zero the buffers a chunk message takes (see chunkPool), by the transport
// and by the proto codec (grpc-go's own codec materializes a message into
// a buffer of the default pool, whatever the server's pool; that pool
// zeroes each buffer whole at each Get, and between its 32 KiB and 1 MiB
// sizes has none: a message of 64 KiB took a 1 MiB buffer, 16 bytes zeroed
// per byte received).
func ServerOptions() []grpc.ServerOption {
	pool := newChunkPool()
	return []grpc.ServerOption{experimental.BufferPool(pool), grpc.ForceServerCodecV2(protoCodec{pool: pool})}
}

// chunkPool's own buffer sizes: the transport reads each HTTP/2 data frame
// (16 KiB, grpc-go's frame size) into a buffer of its exact size, a 16 KiB
// one; a chunk message (logclient.MaxChunk of data, 32 KiB less 256 bytes,
// and its fields) takes a 32 KiB buffer; the larger ones take chunks of up
// to 128 KiB, as older executors sent 64 KiB.
var chunkSizes = [...]int{16 << 10, 32 << 10, 64 << 10, 128 << 10}

// chunkPool is a mem.BufferPool that keeps buffers of chunkSizes for
// requests above 4 KiB up to 128 KiB, and does not zero them: every user
// of a buffer from Get (the transport reading a frame, its write buffer,
// a message copied whole into it) writes all of its length before reading
// it, and nothing reads past its length. Other sizes go to grpc-go's
// default pool. (Until 2026-12-07 08:00 the frames' 16 KiB buffers came
// from the default pool, which zeroes a buffer whole at each Get: one
// byte cleared per byte received.)
type chunkPool struct {
	pools [len(chunkSizes)]sync.Pool
	rest  mem.BufferPool
}

func newChunkPool() *chunkPool {
	return &chunkPool{rest: mem.DefaultBufferPool()}
}

// tier returns the index in chunkSizes of the buffers for a request of n
// bytes, -1 for the default pool's.
func (p *chunkPool) tier(n int) int {
	if n <= 4<<10 {
		return -1
	}
	for i, size := range chunkSizes {
		if n <= size {
			return i
		}
	}
	return -1
}

func (p *chunkPool) Get(n int) *[]byte {
	i := p.tier(n)
	if i < 0 {
		return p.rest.Get(n)
	}
	if b, ok := p.pools[i].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, chunkSizes[i])
	return &b
}

func (p *chunkPool) Put(b *[]byte) {
	for i, size := range chunkSizes {
		if cap(*b) == size {
			p.pools[i].Put(b)
			return
		}
	}
	p.rest.Put(b)
}

// protoCodec is grpc-go's proto codec, but for the pool it reads messages
// through, and for chunk messages, decoded by decodeChunk.
type protoCodec struct {
	pool mem.BufferPool
}

func (c protoCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2(c.Name()).Marshal(v)
}

func (c protoCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if req, ok := v.(*logsv1.ShipRequest); ok && decodeChunk(data, req) {
		return nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("failed to unmarshal, message is %T, want proto.Message", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

func (protoCodec) Name() string { return "proto" }
