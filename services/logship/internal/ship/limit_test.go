package ship_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
	"github.com/hangar-dev/hangar/services/logship/internal/s3test"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

const testLimit = 64 << 10 // the smallest limit allowed

// stored is the log logship stores for the masked stream under limit:
// the head and the tail, with the notice between them when bytes are cut.
func stored(masked string, limit int) string {
	if len(masked) <= limit {
		return masked
	}
	head, tail := limit/2, limit-limit/2
	cut := len(masked) - limit
	return masked[:head] + fmt.Sprintf("\n[hangar] log truncated: %d bytes cut from the middle (limit %d bytes)\n", cut, limit) +
		masked[len(masked)-tail:]
}

// limitOutput returns about size bytes of numbered lines, a secret in
// every seventh one, ending with a newline.
func limitOutput(size int, from int, secret string) string {
	var b strings.Builder
	for i := from; b.Len() < size; i++ {
		fmt.Fprintf(&b, "line %06d of the run", i)
		if i%7 == 0 {
			b.WriteString(" token=" + secret)
		}
		b.WriteString(" ........................................\n")
	}
	return b.String()
}

// cutChunks cuts s into chunks of varying sizes (1 to 3000 bytes), so
// that many boundaries fall inside secrets.
func cutChunks(s string) []string {
	var chunks []string
	for i, k := 0, 0; i < len(s); k++ {
		n := min(1+(k*997)%3000, len(s)-i)
		chunks = append(chunks, s[i:i+n])
		i += n
	}
	return chunks
}

// tailSegments returns the names and sizes of the run's tail segments.
func tailSegments(t *testing.T, dir, runID string) map[string]int64 {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dir, runID))
	if err != nil {
		t.Fatal(err)
	}
	segs := map[string]int64{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "tail.") {
			info, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			segs[e.Name()] = info.Size()
		}
	}
	return segs
}

func readState(t *testing.T, dir, runID string) spool.State {
	t.Helper()
	st, err := spool.ReadState(filepath.Join(dir, runID))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestLogLimit ships logs below, at and above the limit, with a restart
// of logship in the middle of the tail phase (after the tail segment was
// compacted, with a chunk written but not acknowledged): the stored log is
// the head and the tail byte for byte with the notice between, Closed and
// the S3 metadata describe it, the run is acknowledged to the end, and
// nothing is lost or duplicated by the restart.
func TestLogLimit(t *testing.T) {
	const secret = "limit-secret-0123456789"
	secrets := map[string]string{"TOKEN": secret}
	for _, tc := range []struct {
		name     string
		size     int // raw bytes before the restart point
		after    int // raw bytes after it
		restart  bool
		wantCut  bool
		midStops bool // check the tail segment is compacted at the restart point
	}{
		{name: "below the limit", size: 20 << 10, after: 10 << 10},
		{name: "between half and the whole limit", size: 30 << 10, after: 20 << 10},
		{name: "over the limit", size: 150 << 10, after: 100 << 10, wantCut: true, midStops: true},
		{name: "over the limit, restart in the head phase", size: 10 << 10, after: 200 << 10, restart: true, wantCut: true},
		{name: "over the limit, restart in the tail phase", size: 160 << 10, after: 90 << 10, restart: true, wantCut: true, midStops: true},
		{name: "restart in the tail phase, before compaction", size: 50 << 10, after: 90 << 10, restart: true, wantCut: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s3 := s3test.Start(t)
			dir := t.TempDir()
			o := options{maxLogBytes: testLimit}
			l := startLogship(t, s3, dir, o)
			runID := "run-limit"

			// Before the restart point: whole lines, then a chunk ending
			// inside the secret (written to the spool, not acknowledged).
			part1 := limitOutput(tc.size, 0, secret)
			open := "held " + secret[:9]
			part2 := secret[9:] + " released\n" + limitOutput(tc.after, 100000, secret)
			chunks1 := append(cutChunks(part1), open)
			chunks2 := cutChunks(part2)
			raw := part1 + open + part2
			// Every boundary of chunks1 but the last that falls after a
			// newline is a clean point.
			lastClean := uint64(len(chunks1) - 1)

			s := l.open(t, runID, secrets, nil)
			for i, c := range chunks1 {
				s.send(uint64(i+1), c)
			}
			s.waitAck(lastClean)
			time.Sleep(100 * time.Millisecond) // the held chunk reaches the spool
			if tc.midStops {
				segs := tailSegments(t, dir, runID)
				t.Logf("tail segments at the restart point: %v", segs)
				if _, ok := segs["tail.0"]; ok || len(segs) != 1 {
					t.Errorf("want one compacted tail segment, have %v", segs)
				}
				for name, size := range segs {
					if size > testLimit+3000 { // twice the tail limit, plus a chunk
						t.Errorf("tail segment %s has %d bytes, more than twice the tail limit plus a chunk", name, size)
					}
				}
			}
			if st := readState(t, dir, runID); st.TailBytes > 0 {
				// The held chunk's first bytes are in the tail segment, past
				// the committed ones: the restart must drop them.
				seg := tailSegments(t, dir, runID)["tail."+strconv.FormatUint(st.TailSegment, 10)]
				if seg != st.TailBytes-st.TailBase+int64(len("held ")) {
					t.Errorf("tail segment has %d bytes, committed %d: want the held chunk's 5 released bytes uncommitted", seg, st.TailBytes-st.TailBase)
				}
			}
			if tc.restart {
				s.cancel()
				l.stop()
				l = startLogship(t, s3, dir, o)
				s = l.open(t, runID, secrets, nil)
				if s.next != lastClean+1 {
					t.Fatalf("next_sequence after the restart = %d, want %d", s.next, lastClean+1)
				}
				s.send(s.next, chunks1[s.next-1])
			}
			base := uint64(len(chunks1))
			for i, c := range chunks2 {
				s.send(base+uint64(i+1), c)
			}
			last := base + uint64(len(chunks2))
			if got := s.waitAck(last); got != last {
				t.Fatalf("ack = %d, want %d: the run must be acknowledged to the end", got, last)
			}
			closed := s.close(last)

			masked := maskAll(raw, secrets)
			want := stored(masked, testLimit)
			if tc.wantCut != (len(masked) > testLimit) {
				t.Fatalf("test data: %d masked bytes, want cut %v", len(masked), tc.wantCut)
			}
			checkFinal(t, s3, runID, closed, want)
			_, meta, _ := s3.Get(t, closed.GetLogKey())
			if got, want := meta[s3log.MetaTruncated], strconv.Itoa(max(0, len(masked)-testLimit)); got != want {
				t.Errorf("metadata %s = %q, want %q", s3log.MetaTruncated, got, want)
			}
			if tc.wantCut {
				notice := fmt.Sprintf("\n[hangar] log truncated: %d bytes cut from the middle (limit %d bytes)\n", len(masked)-testLimit, testLimit)
				if !strings.Contains(want, notice) || len(want) != testLimit+len(notice) {
					t.Fatalf("expected log malformed")
				}
			} else if strings.Contains(want, "[hangar] log truncated") {
				t.Fatal("a log within the limit has a truncation notice")
			}
			// Tail reads the stored log; live chunks are a prefix of it.
			if got, err := tail(t, l, runID, 0); err != nil || got != want {
				t.Errorf("Tail after Close: %d bytes, %v; want the stored log (%d bytes)", len(got), err, len(want))
			}
			waitSpoolGone(t, dir, runID)
			var live []byte
			for _, key := range s3.PutKeys("runs/" + runID + "/") {
				body, _ := s3.Put(key)
				assertNoSecretIn(t, key, body, secrets)
				if strings.Contains(key, "/chunks/") {
					live = append(live, body...)
				}
			}
			if !strings.HasPrefix(want, string(live)) || len(live) > testLimit/2 {
				t.Errorf("live chunks (%d bytes) are not a prefix of the head", len(live))
			}
			if !tc.restart {
				got := testutil.ToFloat64(counter(t, l.reg, "hangar_logship_bytes_truncated_total"))
				if got != float64(max(0, len(masked)-testLimit)) {
					t.Errorf("bytes_truncated_total = %v, want %d", got, max(0, len(masked)-testLimit))
				}
			}
			assertNoSecretIn(t, "logship's logs", []byte(l.logs.String()), secrets)
		})
	}
}

// TestTailDuringTailPhase: while the run is past its head, Tail has shown
// the head and waits; at Close it sends the notice and the kept tail.
func TestTailDuringTailPhase(t *testing.T) {
	s3 := s3test.Start(t)
	l := startLogship(t, s3, t.TempDir(), options{maxLogBytes: testLimit})
	raw := limitOutput(3*testLimit, 0, "unused-secret-value")
	chunks := cutChunks(raw)
	s := l.open(t, "run-tailphase", nil, nil)
	for i, c := range chunks {
		s.send(uint64(i+1), c)
	}
	s.waitAck(uint64(len(chunks)))
	got := make(chan string, 1)
	go func() {
		data, err := tail(t, l, "run-tailphase", 0)
		if err != nil {
			t.Errorf("tail: %v", err)
		}
		got <- data
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case data := <-got:
		t.Fatalf("Tail ended before Close with %d bytes", len(data))
	default:
	}
	closed := s.close(uint64(len(chunks)))
	want := stored(raw, testLimit)
	if data := <-got; data != want {
		t.Errorf("Tail = %d bytes, want the stored log (%d bytes)", len(data), len(want))
	}
	checkFinal(t, s3, "run-tailphase", closed, want)
}
