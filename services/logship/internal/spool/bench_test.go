package spool

import (
	"testing"
)

// BenchmarkCommit: one group commit as BenchmarkShip's Ship makes them:
// 4 MiB appended to the log in 64 KiB writes, then Commit (the log made
// durable, then the state saved). MB/s counts the log bytes.
func BenchmarkCommit(b *testing.B) {
	const group, write = 4 << 20, 64 << 10
	sp, err := Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	r, err := sp.OpenRun("run-1")
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, write)
	for i := range buf {
		buf[i] = byte('a' + i%26)
	}
	b.SetBytes(group)
	b.ResetTimer()
	for i := range b.N {
		for range group / write {
			if _, err := r.Write(buf); err != nil {
				b.Fatal(err)
			}
		}
		if err := r.Commit(State{RunID: "run-1", AckedSequence: uint64(i + 1), MaskedBytes: r.Size()}); err != nil {
			b.Fatal(err)
		}
	}
}
