package ship

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/mem"
)

// recvPoolExponents are the buffer sizes (powers of two) of the Ship
// server's buffer pool: grpc-go's default ones (256 B, 4, 16 and 32 KiB,
// 1 MiB) and 128 KiB. A chunk message (up to 64 KiB of data and its
// header, logclient.MaxChunk) is read into one buffer of the pool, which
// the pool zeroes whole at each Get: with the default sizes that is a
// 1 MiB buffer, 16 bytes zeroed per byte received; with 128 KiB, 2.
var recvPoolExponents = []uint8{8, 12, 14, 15, 17, 20}

// ServerOptions are the options Ship wants of the gRPC server it is
// registered on: a buffer pool with a size that fits a chunk message.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{experimental.BufferPool(newRecvPool())}
}

func newRecvPool() mem.BufferPool {
	pool, err := mem.NewBinaryTieredBufferPool(recvPoolExponents...)
	if err != nil {
		panic("ship: buffer pool sizes: " + err.Error()) // constant sizes: a bug
	}
	return pool
}
