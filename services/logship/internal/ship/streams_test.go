package ship_test

import (
	"bufio"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/services/logship/internal/s3test"
)

// TestSecretSplitAcrossStreams: a secret printed to stdout in parts with
// stderr or system output between them (a shell's "+ cmd" trace, the
// executor's phase lines) is masked in the final S3 object, in the live
// chunk objects, in Tail (live and from S3) and in the standard output
// lines, with or without a restart of logship between the parts. The
// parts' neighbours stay in order within their stream; the bytes held back
// as a possible secret come out after the other streams' bytes.
func TestSecretSplitAcrossStreams(t *testing.T) {
	const secret = "hunter2-correct-horse"
	secrets := map[string]string{"DB_PASSWORD": secret}
	// The parts, each long enough to be looked for in the objects.
	parts := map[string]string{"first part": "hunter2-", "second part": "correct-horse", "last part": "-horse"}
	out, errs, sys := logsv1.Stream_STREAM_STDOUT, logsv1.Stream_STREAM_STDERR, logsv1.Stream_STREAM_SYSTEM
	for _, tc := range []struct {
		name    string
		pieces  []piece
		restart int // restart logship after this many chunks (0: never)
		next    uint64
		want    string
		lines   []wantLine
	}{
		{
			name:   "stderr between",
			pieces: []piece{{out, "start\n"}, {out, "password=hunter2-"}, {errs, "+ echo x\n"}, {out, "correct-horse\n"}, {out, "done\n"}},
			want:   "start\npassword=\n+ echo x\n" + mask + "\ndone\n",
			lines:  []wantLine{{"stdout", "start"}, {"stdout", "password="}, {"stderr", "+ echo x"}, {"stdout", mask}, {"stdout", "done"}},
		},
		{
			name:   "footer after held bytes",
			pieces: []piece{{out, "start\n"}, {out, "done hunter2"}, {sys, "\n[hangar] run r: finished\n"}},
			want:   "start\ndone hunter2\n\n[hangar] run r: finished\n",
			lines:  []wantLine{{"stdout", "start"}, {"stdout", "done hunter2"}, {"system", ""}, {"system", "[hangar] run r: finished"}},
		},
		{
			name: "three parts, stderr between",
			pieces: []piece{{out, "start\n"}, {out, "token: hunter2-"}, {errs, "+ step\n"}, {out, "correct"}, {errs, "+ step 2\n"},
				{out, "-horse!\n"}, {out, "done\n"}},
			want: "start\ntoken: \n+ step\n+ step 2\n" + mask + "!\ndone\n",
			lines: []wantLine{{"stdout", "start"}, {"stdout", "token: "}, {"stderr", "+ step"}, {"stderr", "+ step 2"}, {"stdout", mask + "!"},
				{"stdout", "done"}},
		},
		{
			name:    "restart after the first part",
			pieces:  []piece{{out, "start\n"}, {out, "password=hunter2-"}, {errs, "+ echo x\n"}, {out, "correct-horse\n"}, {out, "done\n"}},
			restart: 2, next: 2,
			want:  "start\npassword=\n+ echo x\n" + mask + "\ndone\n",
			lines: []wantLine{{"stdout", "start"}, {"stdout", "password="}, {"stderr", "+ echo x"}, {"stdout", mask}, {"stdout", "done"}},
		},
		{
			name:    "restart between stderr and the second part",
			pieces:  []piece{{out, "start\n"}, {out, "password=hunter2-"}, {errs, "+ echo x\n"}, {out, "correct-horse\n"}, {out, "done\n"}},
			restart: 3, next: 2,
			want:  "start\npassword=\n+ echo x\n" + mask + "\ndone\n",
			lines: []wantLine{{"stdout", "start"}, {"stdout", "password="}, {"stderr", "+ echo x"}, {"stdout", mask}, {"stdout", "done"}},
		},
		{
			name: "restart in three parts",
			pieces: []piece{{out, "start\n"}, {out, "token: hunter2-"}, {errs, "+ step\n"}, {out, "correct"}, {errs, "+ step 2\n"},
				{out, "-horse!\n"}, {out, "done\n"}},
			restart: 5, next: 2,
			want: "start\ntoken: \n+ step\n+ step 2\n" + mask + "!\ndone\n",
			lines: []wantLine{{"stdout", "start"}, {"stdout", "token: "}, {"stderr", "+ step"}, {"stderr", "+ step 2"}, {"stdout", mask + "!"},
				{"stdout", "done"}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s3 := s3test.Start(t)
			dir := t.TempDir()
			stdout := &syncBuffer{}
			o := options{stdout: stdout}
			l := startLogship(t, s3, dir, o)
			const runID = "run-streams"
			s := l.open(t, runID, secrets, nil)

			// A live reader from the start (restarted with logship).
			type tailResult struct {
				data string
				err  error
			}
			startTail := func(l *logship, offset uint64) (chan tailResult, context.CancelFunc) {
				ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
				st, err := l.client.Tail(ctx, &logsv1.TailRequest{RunId: runID, Offset: offset})
				if err != nil {
					t.Fatal(err)
				}
				res := make(chan tailResult, 1)
				go func() {
					var b strings.Builder
					for {
						resp, err := st.Recv()
						if err != nil {
							res <- tailResult{b.String(), err}
							return
						}
						b.WriteString(string(resp.GetData()))
						if resp.GetEnd() {
							res <- tailResult{b.String(), nil}
							return
						}
					}
				}()
				return res, cancel
			}
			live, stopTail := startTail(l, 0)
			var liveSeen string

			for i, p := range tc.pieces {
				seq := uint64(i + 1)
				if tc.restart > 0 && i == tc.restart {
					time.Sleep(100 * time.Millisecond) // acks and live chunks go out
					s.cancel()
					stopTail()
					r := <-live
					liveSeen = r.data
					l.stop()
					l = startLogship(t, s3, dir, o)
					s = l.open(t, runID, secrets, nil)
					if s.next != tc.next {
						t.Fatalf("next_sequence after the restart = %d, want %d", s.next, tc.next)
					}
					for j := s.next; j < seq; j++ {
						s.sendStream(j, tc.pieces[j-1])
					}
					live, stopTail = startTail(l, uint64(len(liveSeen)))
				}
				s.sendStream(seq, p)
				time.Sleep(60 * time.Millisecond) // live chunk objects of every stage
			}
			closed := s.close(uint64(len(tc.pieces)))
			checkFinal(t, s3, runID, closed, tc.want)
			r := <-live
			stopTail()
			if r.err != nil {
				t.Fatalf("live tail: %v", r.err)
			}
			if got := liveSeen + r.data; got != tc.want {
				t.Errorf("live tail = %q, want %q", got, tc.want)
			}
			waitSpoolGone(t, dir, runID)
			if got, err := tail(t, l, runID, 0); err != nil || got != tc.want {
				t.Errorf("tail from S3 = %q, %v; want %q", got, err, tc.want)
			}

			// Live chunk objects: none holds the secret or a part of it, and
			// in key order they are a prefix of the log.
			var chunks []byte
			for _, key := range s3.PutKeys("runs/" + runID + "/") {
				body, _ := s3.Put(key)
				assertNoSecretIn(t, key, body, secrets)
				assertNoSecretIn(t, key, body, parts)
				if strings.Contains(key, "/chunks/") {
					chunks = append(chunks, body...)
				}
			}
			if len(chunks) == 0 {
				t.Error("no live chunk object")
			}
			if !strings.HasPrefix(tc.want, string(chunks)) {
				t.Errorf("live chunks %q are not a prefix of the log", chunks)
			}

			// Standard output.
			assertNoSecretIn(t, "standard output", []byte(stdout.String()), secrets)
			assertNoSecretIn(t, "standard output", []byte(stdout.String()), parts)
			var got []wantLine
			sc := bufio.NewScanner(strings.NewReader(stdout.String()))
			for sc.Scan() {
				var line map[string]string
				if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
					t.Fatalf("standard output line: %v: %s", err, sc.Text())
				}
				got = append(got, wantLine{line["stream"], line["message"]})
			}
			if len(got) != len(tc.lines) {
				t.Fatalf("standard output lines %q, want %q", got, tc.lines)
			}
			for i := range got {
				if got[i] != tc.lines[i] {
					t.Errorf("standard output line %d = %q, want %q", i, got[i], tc.lines[i])
				}
			}
		})
	}
}
