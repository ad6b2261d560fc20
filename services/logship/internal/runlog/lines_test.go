package runlog

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

func TestLineEmitter(t *testing.T) {
	type feed struct {
		data   string
		stream string
	}
	type line struct{ stream, message string }
	long := strings.Repeat("x", MaxLineBytes)
	// "é" is 2 bytes: placed across the MaxLineBytes boundary.
	accent := strings.Repeat("a", MaxLineBytes-1) + "é" + "b"
	for _, tc := range []struct {
		name        string
		feeds       []feed
		want        []line
		wantPartial int // bytes held before flush
	}{
		{"lines", []feed{{"a\nb\n", "stdout"}}, []line{{"stdout", "a"}, {"stdout", "b"}}, 0},
		{"joined across feeds", []feed{{"jo", "stdout"}, {"in", "stdout"}, {"ed\nnext", "stdout"}},
			[]line{{"stdout", "joined"}, {"stdout", "next"}}, 4},
		{"mixed streams lose the stream", []feed{{"out ", "stdout"}, {"err\n", "stderr"}, {"e\n", "stderr"}},
			[]line{{"", "out err"}, {"stderr", "e"}}, 0},
		{"carriage return before newline dropped", []feed{{"crlf\r\n\rx\n", "stdout"}},
			[]line{{"stdout", "crlf"}, {"stdout", "\rx"}}, 0},
		{"empty lines kept", []feed{{"\n\n", "system"}}, []line{{"system", ""}, {"system", ""}}, 0},
		{"exactly the longest line", []feed{{long + "\n", "stdout"}}, []line{{"stdout", long}}, 0},
		{"one byte longer is split", []feed{{long[:100], "stdout"}, {long[100:] + "y\n", "stdout"}},
			[]line{{"stdout", long}, {"stdout", "y"}}, 0},
		{"split at a character boundary", []feed{{accent + "\n", "stdout"}},
			[]line{{"stdout", accent[:MaxLineBytes-1]}, {"stdout", "éb"}}, 0},
		{"partial line at the end", []feed{{"a\nno newline", "stdout"}}, []line{{"stdout", "a"}, {"stdout", "no newline"}}, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			e := newLineEmitter(&lineSink{log: slog.New(slog.DiscardHandler), w: &out}, "run-1", "stack-1", 100)
			now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
			total := 0
			for _, f := range tc.feeds {
				e.feed([]byte(f.data), now, f.stream)
				total += len(f.data)
			}
			if len(e.partial) != tc.wantPartial || e.emitted() != int64(100+total-tc.wantPartial) {
				t.Errorf("held %d bytes, emitted to %d; want %d held", len(e.partial), e.emitted(), tc.wantPartial)
			}
			e.flush()
			var got []line
			sc := bufio.NewScanner(&out)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var l jsonLine
				if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
					t.Fatal(err)
				}
				if l.RunID != "run-1" || l.StackID != "stack-1" || l.Time != "2026-01-02T03:04:05.000000006Z" {
					t.Errorf("line %+v", l)
				}
				got = append(got, line{l.Stream, l.Message})
			}
			if len(got) != len(tc.want) {
				t.Fatalf("%d lines, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("line %d = {%q, %.40q}, want {%q, %.40q}", i, got[i].stream, got[i].message, tc.want[i].stream, tc.want[i].message)
				}
			}
		})
	}
}

func TestRuneCut(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"abc", 3},
		{"ab\xc3", 2},        // first byte of é
		{"ab\xc3\xa9", 4},    // é complete
		{"a\xe2\x82", 1},     // 2 of the 3 bytes of €
		{"a\xf0\x9f\x98", 1}, // 3 of the 4 bytes of an emoji
		{"\xc3", 1},          // nothing before: keep it
		{"ab\x80", 3},        // a stray continuation byte: invalid anyway
	} {
		if got := runeCut([]byte(tc.in)); got != tc.want {
			t.Errorf("runeCut(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// TestAppendLine: the JSON lines are byte for byte those of encoding/json
// (without HTML escaping), on random bytes too.
func TestAppendLine(t *testing.T) {
	at := time.Date(2026, 11, 27, 3, 4, 5, 600700, time.FixedZone("X", 3600))
	msgs := []string{"", "plain", `quo"te back\slash`, "tab\tcr\rnl\nbs\bff\f", "\x00\x01\x1b[0m\x7f",
		"<html>&amp;", "é ü 中文 🎉", "bad \xff\xfe utf8 \xe2\x82", "cut \xf0\x9f\x8e", "\u2028 and \u2029", "\xed\xa0\x80 surrogate"}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		b := make([]byte, rng.IntN(40))
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		msgs = append(msgs, string(b))
	}
	for _, m := range msgs {
		for _, stream := range []string{"", "stdout"} {
			var want bytes.Buffer
			enc := json.NewEncoder(&want)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(jsonLine{RunID: "run-\x01\"1", StackID: "stack\u2028", Time: at.UTC().Format(time.RFC3339Nano),
				Stream: stream, Message: m}); err != nil {
				t.Fatal(err)
			}
			got := appendLine(nil, "run-\x01\"1", "stack\u2028", at, stream, []byte(m))
			if string(got) != want.String() {
				t.Fatalf("appendLine(%q) =\n%s\nwant\n%s", m, got, want.String())
			}
		}
	}
}
