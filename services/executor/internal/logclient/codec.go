package logclient

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// sendBufSize is the capacity of sendPool's buffers: a ShipRequest with a
// chunk of MaxChunk bytes and its fields fits (MaxChunk leaves 256 bytes
// for them).
const sendBufSize = 32 << 10

// sendCodec is grpc-go's proto codec, but for the buffers it marshals
// messages into: grpc-go's marshals a message above 1 KiB into a buffer of
// its default pool, which zeroes the buffer whole at each Get (one byte
// cleared per byte of output sent, before the marshal writes it again).
// sendCodec's buffers come from a pool that does not zero them: the
// marshal writes every byte of the message's length, and gRPC reads no
// further. Messages are read with grpc-go's codec.
type sendCodec struct {
	pool *sendPool
}

func newSendCodec() sendCodec { return sendCodec{pool: &sendPool{}} }

func (c sendCodec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("failed to marshal, message is %T, want proto.Message", v)
	}
	size := proto.Size(m)
	buf := c.pool.Get(size)
	// UseCachedSize: the size was just computed, and the message is not
	// changed meanwhile (a chunk's data is not written once cut).
	if _, err := (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend((*buf)[:0], m); err != nil {
		c.pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, c.pool)}, nil
}

func (sendCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}

func (sendCodec) Name() string { return "proto" }

// sendPool is a mem.BufferPool of sendBufSize buffers, not zeroed, for
// requests up to that size; larger ones are allocated (a Stream sends
// none).
type sendPool struct {
	bufs sync.Pool
}

func (p *sendPool) Get(n int) *[]byte {
	if n <= sendBufSize {
		if b, ok := p.bufs.Get().(*[]byte); ok {
			*b = (*b)[:n]
			return b
		}
		b := make([]byte, n, sendBufSize)
		return &b
	}
	b := make([]byte, n)
	return &b
}

func (p *sendPool) Put(b *[]byte) {
	if cap(*b) == sendBufSize {
		p.bufs.Put(b)
	}
}
