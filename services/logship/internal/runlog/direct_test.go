package runlog

import (
	"strings"
	"testing"
)

// TestOnePass: chunks of one stream from a clean point are masked by the
// last pass alone (their stream's masker reads nothing); a chunk of
// another stream before the next clean point masks the segment again
// through the streams' maskers; a direct segment keeps at most
// maxKeptBytes of chunks. Whatever happens, the log is modelLog's (a
// masker per stream, then the last pass), and no secret survives.
func TestOnePass(t *testing.T) {
	defer func(n int64) { maxKeptBytes = n }(maxKeptBytes)
	maxKeptBytes = 32
	for _, tc := range []struct {
		name    string
		secrets []string
		pieces  []streamPiece
		// streamBytes is what the streams' maskers read in all.
		streamBytes int64
		want        string
	}{
		{
			name:    "stdout",
			secrets: []string{"hunter2-xyz"},
			pieces:  []streamPiece{{StreamStdout, "a hunt"}, {StreamStdout, "er2-xyz b\n"}, {StreamStdout, "c\n"}},
			want:    "a ****** b\nc\n",
		},
		{
			name:    "stdout with system lines between",
			secrets: []string{"hunter2-xyz"},
			pieces: []streamPiece{{StreamSystem, "[hangar] phase plan\n"}, {StreamStdout, "x hunter2-xyz\n"},
				{StreamSystem, "[hangar] phase apply\n"}, {StreamStdout, "prompt: "}, {StreamSystem, "[hangar] done\n"}},
			want: "[hangar] phase plan\nx ******\n[hangar] phase apply\nprompt: \n[hangar] done\n",
		},
		{
			name:    "stderr while stdout holds the start of a secret",
			secrets: []string{"hunter2-xyz"},
			pieces:  []streamPiece{{StreamStdout, "ok\n"}, {StreamStdout, "a hunt"}, {StreamStderr, "+ cmd\n"}, {StreamStdout, "er2-xyz b\n"}},
			// the segment (stdout "a hunt") is masked again through
			// stdout's masker, and so is the rest up to a clean point.
			streamBytes: 6 + 6 + 10,
			want:        "ok\na \n+ cmd\n****** b\n",
		},
		{
			// A mask at the end of a write is held (a match right after
			// it would join it): not a clean point.
			name:        "a secret ending with a newline, then another stream",
			secrets:     []string{"line-one\nline-two\n"},
			pieces:      []streamPiece{{StreamStdout, "x line-one\nline-two\n"}, {StreamStderr, "err\n"}},
			streamBytes: 20 + 4,
			want:        "x \nerr\n******",
		},
		{
			name:    "never clean: the segment is bounded",
			secrets: []string{"hunter2-xyz"},
			pieces: []streamPiece{{StreamStdout, "0123456789 hunt"}, {StreamStdout, "er2-xyz hunt"}, {StreamStdout, "er2-xyz hunt"},
				{StreamStdout, "er2-xyz hunt"}, {StreamStdout, "er2-xyz\n"}},
			// past 32 bytes kept (the third chunk), the segment goes
			// through stdout's masker, up to the clean point at the end.
			streamBytes: 15 + 12 + 12 + 12 + 8,
			want:        "0123456789 ****** ****** ****** ******\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := openTestRun(t, tc.secrets...)
			defer tr.m.Close()
			r := tr.m.runs["r"]
			for i, p := range tc.pieces {
				if _, _, err := tr.s.Chunk(Chunk{Sequence: uint64(i + 1), Stream: p.stream, Data: []byte(p.data)}); err != nil {
					t.Fatal(err)
				}
				r.mu.Lock()
				kept := r.keptBytes
				r.mu.Unlock()
				if kept > maxKeptBytes+int64(len(p.data)) {
					t.Errorf("after chunk %d: %d bytes kept", i+1, kept)
				}
			}
			r.mu.Lock()
			var read int64
			for i := range r.streams {
				read += r.streams[i].w.Stats().BytesIn
			}
			r.mu.Unlock()
			if read != tc.streamBytes {
				t.Errorf("the streams' maskers read %d bytes, want %d", read, tc.streamBytes)
			}
			if _, err := tr.s.Close(t.Context(), uint64(len(tc.pieces))); err != nil {
				t.Fatal(err)
			}
			got := tr.final()
			if i := strings.Index(got, "[hangar] encodings not masked"); i == 0 {
				got = got[strings.Index(got, "\n")+1:]
			}
			if got != tc.want {
				t.Errorf("final = %q, want %q", got, tc.want)
			}
			if model, _ := modelLog(t, tr.secrets, tc.pieces); model != tc.want {
				t.Errorf("modelLog = %q, want %q", model, tc.want)
			}
			for _, s := range tc.secrets {
				if strings.Contains(got, s) {
					t.Errorf("secret %q whole in %q", s, got)
				}
			}
		})
	}
}
