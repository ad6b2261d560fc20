package mask

import (
	"math/rand/v2"
	"runtime"
	"testing"
)

// memoryCases are the secret sets whose compiled size is bounded
// (docs/MASKING.md): limit is the most the compiled set may hold.
var memoryCases = []struct {
	name    string
	secrets func() [][]byte
	limit   uint64
}{
	{"keys=10x4KiB", func() [][]byte { return randomSecrets(10, 4<<10) }, 16 << 20},
	{"secret=64KiB", func() [][]byte { return randomSecrets(1, 64<<10) }, 32 << 20},
	{"secrets=100x32B", func() [][]byte { return benchSecrets(100) }, 4 << 20},
	{"cap=256KiB", func() [][]byte { return randomSecrets(4, MaxSecretBytes/4) }, 128 << 20},
}

// randomSecrets returns n printable random values of size bytes, with a
// line break every 64 bytes (as a PEM key has).
func randomSecrets(n, size int) [][]byte {
	rng := rand.New(rand.NewPCG(uint64(n), uint64(size)))
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	out := make([][]byte, n)
	for i := range out {
		s := make([]byte, size)
		for j := range s {
			s[j] = alphabet[rng.IntN(len(alphabet))]
			if j%65 == 64 {
				s[j] = '\n'
			}
		}
		out[i] = s
	}
	return out
}

// setMemory returns the heap bytes a compiled set of secrets holds, and the
// bytes allocated while compiling it.
func setMemory(secrets [][]byte) (held, built uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	set, _ := NewSet(secrets, Options{})
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(set)
	if after.HeapAlloc > before.HeapAlloc {
		held = after.HeapAlloc - before.HeapAlloc
	}
	return held, after.TotalAlloc - before.TotalAlloc
}

// TestMemoryBound: the compiled set holds memory proportional to the total
// pattern bytes, within the documented targets.
func TestMemoryBound(t *testing.T) {
	for _, c := range memoryCases {
		t.Run(c.name, func(t *testing.T) {
			secrets := c.secrets()
			held, built := setMemory(secrets)
			_, rep := NewSet(secrets, Options{})
			t.Logf("%s: holds %.1f MiB (estimate %.1f MiB), %.1f MiB allocated while compiling, %d patterns, %d states",
				c.name, float64(held)/(1<<20), float64(rep.TableBytes)/(1<<20), float64(built)/(1<<20), rep.Patterns, rep.States)
			if held > c.limit {
				t.Errorf("compiled set holds %d bytes, limit %d", held, c.limit)
			}
		})
	}
}
