package mask

import (
	"bytes"
	"testing"
)

// FuzzMask checks the writer against the brute-force reference on random
// secrets, text that embeds the secrets and their encoded forms, and random
// write splits. Equality with the reference proves that no pattern survives
// and that every other byte comes through unchanged and in order.
//
// Inputs: secrets is split at 0x00 into at most 6 values of at most 40
// bytes. In text, the byte 0x01 followed by a byte x is replaced by pattern
// x (mod the number of patterns). splits gives the write sizes, cycled.
func FuzzMask(f *testing.F) {
	f.Add([]byte("abcdef"), []byte("xx\x01\x00yy"), []byte{1}, false)
	f.Fuzz(func(t *testing.T, secretsIn, text, splits []byte, plain bool) {
		var secrets [][]byte
		for _, s := range bytes.Split(secretsIn, []byte{0}) {
			if len(secrets) == 6 {
				break
			}
			secrets = append(secrets, s[:min(len(s), 40)])
		}
		opts := Options{MinLength: 4, DisableEncodings: plain, Mask: []byte("#")}
		set, rep := NewSet(secrets, opts)
		pats, _ := patterns(secrets, opts)
		if rep.Patterns != len(pats) {
			t.Fatalf("report counts %d patterns, want %d", rep.Patterns, len(pats))
		}

		var input []byte
		for i := 0; i < len(text) && len(input) < 1<<14; i++ {
			if text[i] == 1 && i+1 < len(text) && len(pats) > 0 {
				input = append(input, pats[int(text[i+1])%len(pats)]...)
				i++
				continue
			}
			input = append(input, text[i])
		}
		sizes := make([]int, len(splits))
		for i, b := range splits {
			sizes[i] = int(b)%32 + 1
			if b >= 0xE0 {
				sizes[i] = int(b-0xDF) * 128
			}
		}
		if len(splits) > 0 && splits[0]&0x80 != 0 {
			set.laneMin = 0 // scan in lanes whenever the write allows
		}

		want, masks := referenceCount(input, pats, set.mask)
		var dst bytes.Buffer
		w := set.NewWriter(&dst)
		rest := input
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if len(sizes) > 0 {
				n = min(sizes[i%len(sizes)], n)
			}
			if _, err := w.Write(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
			// Never more than the automaton's window is held back.
			if held := int64(len(input)-len(rest)) - int64(w.done); held > int64(max(set.maxLen-1, 0)) && w.head == len(w.spans) {
				t.Fatalf("holding %d bytes, longest pattern is %d", held, set.maxLen)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if got := dst.Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("secrets %q\ninput %q\n got %q\nwant %q", secrets, input, got, want)
		}
		st := w.Stats()
		if st.BytesIn != int64(len(input)) || st.BytesOut != int64(len(want)) || st.Masks != masks {
			t.Fatalf("stats %+v; in %d out %d", st, len(input), len(want))
		}
	})
}
