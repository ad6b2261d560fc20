package ship

import (
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// ServerOptions are the options Ship wants of the gRPC server it is
// registered on: messages are read into buffers of a pool that fits a
// chunk message and does not zero them (see chunkPool), by the transport
// and by the proto codec (grpc-go's own codec materializes a message into
// a buffer of the default pool, whatever the server's pool: for a chunk
// message a 1 MiB buffer, zeroed whole at each Get, 16 bytes zeroed per
// byte received).
func ServerOptions() []grpc.ServerOption {
	pool := newChunkPool()
	return []grpc.ServerOption{experimental.BufferPool(pool), grpc.ForceServerCodecV2(protoCodec{pool: pool})}
}

// chunkBufSize is the size of chunkPool's own buffers: a chunk message
// (up to 64 KiB of data, logclient.MaxChunk, and its fields) fits.
const chunkBufSize = 128 << 10

// chunkPool is a mem.BufferPool that keeps buffers of chunkBufSize for
// requests from half that size up to it and does not zero them: every
// user of a buffer from Get (the transport reading a frame, a message
// copied whole into it) writes all of its length before reading it, and
// nothing reads past its length. Other sizes go to grpc-go's default pool.
type chunkPool struct {
	pool sync.Pool
	rest mem.BufferPool
}

func newChunkPool() *chunkPool {
	return &chunkPool{rest: mem.DefaultBufferPool()}
}

func (p *chunkPool) Get(n int) *[]byte {
	if n < chunkBufSize/2 || n > chunkBufSize {
		return p.rest.Get(n)
	}
	if b, ok := p.pool.Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, chunkBufSize)
	return &b
}

func (p *chunkPool) Put(b *[]byte) {
	if cap(*b) != chunkBufSize {
		p.rest.Put(b)
		return
	}
	p.pool.Put(b)
}

// protoCodec is grpc-go's proto codec, but for the pool it reads messages
// through.
type protoCodec struct {
	pool mem.BufferPool
}

func (c protoCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2(c.Name()).Marshal(v)
}

func (c protoCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("failed to unmarshal, message is %T, want proto.Message", v)
	}
	buf := data.MaterializeToBuffer(c.pool)
	defer buf.Free()
	return proto.Unmarshal(buf.ReadOnlyData(), m)
}

func (protoCodec) Name() string { return "proto" }
