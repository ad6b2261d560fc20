package ship_test

import (
	"bufio"
	"encoding/json"
	"strings"
	"testing"
	"time"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/services/logship/internal/s3test"
)

type piece struct {
	stream logsv1.Stream
	data   string
}

type wantLine struct {
	stream, message string
}

func (s *session) sendStream(seq uint64, p piece) {
	s.t.Helper()
	err := s.stream.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Chunk{Chunk: &logsv1.Chunk{
		Sequence: seq, Stream: p.stream, Data: []byte(p.data), TimeUnixMs: time.Now().UnixMilli()}}})
	if err != nil {
		s.t.Fatalf("send chunk %d: %v", seq, err)
	}
}

// TestRunLogsOnStandardOutput ships two runs at once, interleaved, and
// reads logship's standard output: one JSON object per masked line, in
// order per run, partial lines joined, long lines split, the stream and
// the stack id given, and no secret, even one split across chunks. With a
// restart of logship in the middle (while a partial line is held), no line
// is lost or written twice; with a log over its limit, every line is still
// written (the limit is the stored log's).
func TestRunLogsOnStandardOutput(t *testing.T) {
	const secret = "stdout-secret-7f3a9c"
	secrets := map[string]string{"TOKEN": secret}
	out, errs := logsv1.Stream_STREAM_STDOUT, logsv1.Stream_STREAM_STDERR

	for _, tc := range []struct {
		name    string
		restart string // restart logship after the chunk with this data
		limit   int64
		filler  int
	}{
		{name: "one logship"},
		{name: "restart after a whole line", restart: "first line\n"},
		{name: "restart with a partial line held", restart: "joined "},
		{name: "log over its limit", limit: testLimit, filler: 200 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var pieces []piece
			var want []wantLine
			add := func(stream logsv1.Stream, data ...string) {
				for _, d := range data {
					pieces = append(pieces, piece{stream, d})
				}
			}
			add(out, "first line\n", "password=")
			for i := range len(secret) { // the secret one byte per chunk
				add(out, secret[i:i+1])
			}
			add(out, " in the middle\n")
			want = append(want, wantLine{"stdout", "first line"}, wantLine{"stdout", "password=" + mask + " in the middle"})
			long := strings.Repeat("L", 150000)
			add(out, long[:50000], long[50000:100000], long[100000:], "\n")
			want = append(want, wantLine{"stdout", long[:65536]}, wantLine{"stdout", long[65536:131072]}, wantLine{"stdout", long[131072:]})
			add(out, "joined ", "across ", "chunks\n")
			add(errs, "warning on stderr\n")
			add(out, "mixed ")
			add(errs, "streams\n")
			add(out, "crlf line\r\n")
			want = append(want, wantLine{"stdout", "joined across chunks"}, wantLine{"stderr", "warning on stderr"},
				wantLine{"stdout", "mixed "}, wantLine{"stderr", "streams"}, wantLine{"stdout", "crlf line"})
			if tc.filler > 0 {
				filler := limitOutput(tc.filler, 0, secret)
				add(out, cutChunks(filler)...)
				for line := range strings.Lines(maskAll(filler, secrets)) {
					want = append(want, wantLine{"stdout", strings.TrimSuffix(line, "\n")})
				}
			}
			add(out, "no newline at the end")
			want = append(want, wantLine{"stdout", "no newline at the end"})

			s3 := s3test.Start(t)
			dir := t.TempDir()
			stdout := &syncBuffer{}
			o := options{maxLogBytes: tc.limit, stdout: stdout}
			l := startLogship(t, s3, dir, o)
			runs := []string{"run-out-a", "run-out-b"}
			sess := map[string]*session{}
			for _, id := range runs {
				sess[id] = l.open(t, id, secrets, nil)
			}
			restartAt := -1
			for i, p := range pieces {
				if tc.restart != "" && p.data == tc.restart {
					restartAt = i + 1
				}
			}
			start := time.Now()
			for i, p := range pieces {
				if i == restartAt {
					for _, id := range runs {
						sess[id].waitAck(uint64(i))
						sess[id].cancel()
					}
					l.stop()
					l = startLogship(t, s3, dir, o)
					for _, id := range runs {
						sess[id] = l.open(t, id, secrets, nil)
						if sess[id].next != uint64(i+1) {
							t.Fatalf("next_sequence after the restart = %d, want %d", sess[id].next, i+1)
						}
					}
				}
				for _, id := range runs { // interleaved
					sess[id].sendStream(uint64(i+1), p)
				}
			}
			for _, id := range runs {
				sess[id].close(uint64(len(pieces)))
			}

			got := map[string][]wantLine{}
			sc := bufio.NewScanner(strings.NewReader(stdout.String()))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				var line map[string]string
				if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
					t.Fatalf("standard output line is not a JSON object of strings: %v: %.200s", err, sc.Text())
				}
				for k := range line {
					switch k {
					case "run_id", "stack_id", "time", "stream", "message":
					default:
						t.Errorf("unexpected key %q", k)
					}
				}
				if line["stack_id"] != "stack-1" {
					t.Errorf("stack_id = %q", line["stack_id"])
				}
				ts, err := time.Parse(time.RFC3339Nano, line["time"])
				if err != nil || ts.Before(start.Add(-time.Second)) || ts.After(time.Now().Add(time.Second)) {
					t.Errorf("time = %q (%v)", line["time"], err)
				}
				got[line["run_id"]] = append(got[line["run_id"]], wantLine{line["stream"], line["message"]})
			}
			if len(got) != len(runs) {
				t.Fatalf("lines of runs %v, want %v", keys(got), runs)
			}
			for _, id := range runs {
				if len(got[id]) != len(want) {
					t.Errorf("%s: %d lines, want %d", id, len(got[id]), len(want))
				}
				for i := range min(len(got[id]), len(want)) {
					if got[id][i] != want[i] {
						t.Errorf("%s: line %d = {%q, %.80q}, want {%q, %.80q}", id, i, got[id][i].stream, got[id][i].message,
							want[i].stream, want[i].message)
						break
					}
				}
			}
			assertNoSecretIn(t, "standard output", []byte(stdout.String()), secrets)
			assertNoSecretIn(t, "logship's logs", []byte(l.logs.String()), secrets)
		})
	}
}

func keys(m map[string][]wantLine) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
