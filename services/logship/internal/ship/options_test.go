package ship

import (
	"testing"

	"google.golang.org/grpc/mem"
)

// TestRecvPoolFitsChunks: a chunk message of logclient's largest size gets
// a buffer of 128 KiB from the Ship server's pool, not the default pool's
// 1 MiB (which is zeroed whole at each Get).
func TestRecvPoolFitsChunks(t *testing.T) {
	const chunkMessage = 64<<10 + 64 // 64 KiB of data, the message's fields and framing
	for _, tc := range []struct {
		name    string
		pool    mem.BufferPool
		wantCap int
	}{
		{"ship", newRecvPool(), 128 << 10},
		{"grpc default", mem.DefaultBufferPool(), 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := tc.pool.Get(chunkMessage)
			defer tc.pool.Put(buf)
			if len(*buf) != chunkMessage || cap(*buf) != tc.wantCap {
				t.Fatalf("Get(%d): len %d cap %d, want cap %d", chunkMessage, len(*buf), cap(*buf), tc.wantCap)
			}
		})
	}
}
