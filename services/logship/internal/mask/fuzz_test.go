package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"testing"
)

// fuzzEncode returns an encoded form of p chosen by op and arg, as an
// encoder a job runs would print it: wrapped base64 or hex, percent-encoding
// in a mix of cases, JSON/Go escapes of any byte.
func fuzzEncode(p []byte, op, arg byte) []byte {
	width := int(arg%80) + 1
	wrap := func(b []byte) []byte {
		sep := []byte("\n")
		if arg&0x80 != 0 {
			sep = []byte("\r\n")
		}
		var out []byte
		for i := 0; i < len(b); i += width {
			if i > 0 {
				out = append(out, sep...)
			}
			out = append(out, b[i:min(i+width, len(b))]...)
		}
		return out
	}
	switch op % 6 {
	case 0:
		return wrap([]byte(base64.StdEncoding.EncodeToString(p)))
	case 1:
		return wrap([]byte(base64.RawURLEncoding.EncodeToString(p)))
	case 2:
		h := []byte(hex.EncodeToString(p))
		if arg&0x40 != 0 {
			h = bytes.ToUpper(h)
		}
		return wrap(h)
	case 3: // percent-encoding, every other byte, digits in mixed case
		var out []byte
		for i, c := range p {
			if (i+int(arg))%2 == 0 || c == '%' || c == '+' || c == ' ' {
				s := fmt.Sprintf("%%%02X", c)
				if (i+int(arg))%3 == 0 {
					s = fmt.Sprintf("%%%02x", c)
				}
				out = append(out, s...)
			} else {
				out = append(out, c)
			}
		}
		return out
	case 4: // JSON escapes: \u for some bytes, \/ for slashes, \n
		var out []byte
		for i, c := range p {
			switch {
			case c == '"' || c == '\\':
				out = append(out, '\\', c)
			case c == '/':
				out = append(out, '\\', '/')
			case c == '\n':
				out = append(out, '\\', 'n')
			case c < 0x80 && (c < 0x20 || (i+int(arg))%4 == 0):
				s := fmt.Sprintf("\\u%04x", c)
				if arg&1 != 0 {
					s = fmt.Sprintf("\\u%04X", c)
				}
				out = append(out, s...)
			default:
				out = append(out, c)
			}
		}
		return out
	default: // the value in its "\r\n" form
		return bytes.ReplaceAll(p, []byte("\n"), []byte("\r\n"))
	}
}

// FuzzMask checks the writer against the brute-force reference on random
// secrets, text that embeds the secrets' patterns and encoded forms, and
// random write splits. Equality with the reference proves that no pattern
// survives in any view and that every other byte comes through unchanged
// and in order.
//
// Inputs: secrets is split at 0x00 into at most 6 values of at most 40
// bytes. In text, the byte 0x01 followed by x is replaced by pattern x (mod
// the number of patterns); 0x02 x y z by secret x encoded by fuzzEncode(y,
// z). splits gives the write sizes, cycled. formats turns the known formats
// on.
func FuzzMask(f *testing.F) {
	f.Add([]byte("abcdef"), []byte("xx\x01\x00yy"), []byte{1}, false, false)
	f.Add([]byte("p@ss w/rd\"<&>\\é+="), []byte("a\x02\x00\x00\x05b\x02\x00\x03\x07c\x02\x00\x04\x01d"), []byte{3, 1}, false, true)
	f.Add([]byte("line-one\nline-two"), []byte("<\x02\x00\x00\x8c>\x02\x00\x05\x00."), []byte{1, 7}, false, false)
	f.Fuzz(func(t *testing.T, secretsIn, text, splits []byte, plain, formats bool) {
		var secrets [][]byte
		for _, s := range bytes.Split(secretsIn, []byte{0}) {
			if len(secrets) == 6 {
				break
			}
			secrets = append(secrets, s[:min(len(s), 40)])
		}
		opts := Options{MinLength: 4 + len(text)%2, DisableEncodings: plain, Mask: []byte("#"), DisableKnownFormats: !formats}
		set, rep := NewSet(secrets, opts)
		pats, _ := patterns(secrets, opts)
		if rep.Patterns != len(pats) {
			t.Fatalf("report counts %d patterns, want %d", rep.Patterns, len(pats))
		}
		input := fuzzInput(text, secrets, patternBytes(pats))
		sizes := fuzzSizes(splits)
		want, masks := refMask(input, secrets, opts)
		var dst bytes.Buffer
		w := set.NewWriter(&dst)
		clean := writeSplit(t, w, input, sizes, &dst)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if got := dst.Bytes(); !bytes.Equal(got, want) {
			t.Fatalf("secrets %q\ninput %q\n got %q\nwant %q", secrets, input, got, want)
		}
		// At a clean point (Pending() == 0) the writer is as a new one: a
		// new writer given the rest of the input writes the rest of the
		// output.
		if clean.in > 0 {
			var rest bytes.Buffer
			w2 := set.NewWriter(&rest)
			w2.Write(input[clean.in:])
			w2.Close()
			if !bytes.Equal(rest.Bytes(), dst.Bytes()[clean.out:]) {
				t.Fatalf("clean point at %d of %q: a new writer gives %q, want %q", clean.in, input, rest.Bytes(), dst.Bytes()[clean.out:])
			}
		}
		st := w.Stats()
		if st.BytesIn != int64(len(input)) || st.BytesOut != int64(len(want)) || st.Masks != masks {
			t.Fatalf("stats %+v; in %d out %d masks %d", st, len(input), len(want), masks)
		}
	})
}

func fuzzInput(text []byte, secrets, pats [][]byte) []byte {
	var input []byte
	for i := 0; i < len(text) && len(input) < 1<<13; i++ {
		switch {
		case text[i] == 1 && i+1 < len(text) && len(pats) > 0:
			input = append(input, pats[int(text[i+1])%len(pats)]...)
			i++
		case text[i] == 2 && i+3 < len(text) && len(secrets) > 0:
			input = append(input, fuzzEncode(secrets[int(text[i+1])%len(secrets)], text[i+2], text[i+3])...)
			i += 3
		default:
			input = append(input, text[i])
		}
	}
	return input
}

func fuzzSizes(splits []byte) []int {
	sizes := make([]int, len(splits))
	for i, b := range splits {
		sizes[i] = int(b)%32 + 1
		if b >= 0xE0 {
			sizes[i] = int(b-0xDF) * 128
		}
	}
	return sizes
}

// cleanPoint is a point where the writer was clean: input and output
// offsets.
type cleanPoint struct{ in, out int }

// writeSplit writes input in writes of sizes and returns the middle clean
// point it saw (zero if none).
func writeSplit(t *testing.T, w *Writer, input []byte, sizes []int, dst *bytes.Buffer) cleanPoint {
	t.Helper()
	var cleans []cleanPoint
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
		if w.Pending() < 0 || w.Pending() > len(input)-len(rest) {
			t.Fatalf("Pending() = %d", w.Pending())
		}
		if w.Clean() && len(rest) > 0 {
			cleans = append(cleans, cleanPoint{len(input) - len(rest), dst.Len()})
		}
	}
	if len(cleans) == 0 {
		return cleanPoint{}
	}
	return cleans[len(cleans)/2]
}

// FuzzMerged: two streams, each masked by its own writer, their outputs
// interleaved as they come out, and a last writer over the merged log. No
// pattern may appear in the result in any view (the reference finds
// nothing), even when the streams' bytes only form one once merged.
func FuzzMerged(f *testing.F) {
	f.Add([]byte("abcdefgh"), []byte("abcd"), []byte("efgh\n"), []byte{0, 1, 0, 1})
	f.Add([]byte("s3cr3t-v4lue"), []byte("x s3cr"), []byte("3t-v4lue y"), []byte{1, 0, 2})
	f.Fuzz(func(t *testing.T, secretsIn, a, b, order []byte) {
		var secrets [][]byte
		for _, s := range bytes.Split(secretsIn, []byte{0}) {
			if len(secrets) == 4 {
				break
			}
			secrets = append(secrets, s[:min(len(s), 32)])
		}
		opts := Options{MinLength: 4, Mask: []byte{0}, DisableKnownFormats: true}
		set, _ := NewSet(secrets, opts)
		var merged bytes.Buffer
		wa, wb := set.NewWriter(&merged), set.NewWriter(&merged)
		var final bytes.Buffer
		wm := set.NewWriter(&final)
		streams := [2][]byte{a[:min(len(a), 2048)], b[:min(len(b), 2048)]}
		writers := [2]*Writer{wa, wb}
		for i := 0; len(streams[0])+len(streams[1]) > 0; i++ {
			k := 0
			if len(order) > 0 {
				k = int(order[i%len(order)]) % 2
			}
			if len(streams[k]) == 0 {
				k = 1 - k
			}
			n := min(len(streams[k]), 1+i%7)
			before := merged.Len()
			if _, err := writers[k].Write(streams[k][:n]); err != nil {
				t.Fatal(err)
			}
			streams[k] = streams[k][n:]
			if _, err := wm.Write(merged.Bytes()[before:]); err != nil {
				t.Fatal(err)
			}
		}
		for _, w := range writers {
			before := merged.Len()
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := wm.Write(merged.Bytes()[before:]); err != nil {
				t.Fatal(err)
			}
		}
		if err := wm.Close(); err != nil {
			t.Fatal(err)
		}
		if _, masks := refMask(final.Bytes(), secrets, opts); masks != 0 {
			t.Fatalf("secrets %q: the merged log %q still holds a pattern", secrets, final.Bytes())
		}
	})
}
