package ship_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/services/logship/internal/s3test"
	"github.com/hangar-dev/hangar/services/logship/internal/spool"
)

// An Ack never overtakes its commit: whenever the executor receives
// Ack{through n}, the run's state on disk already records chunk n as
// committed, and the log file already holds the committed masked bytes
// the state names (the spool's writes, done behind the handler, reached
// the file before the commit's fsync), a prefix of the masked log with no
// secret in it. Chunks are sent without waiting, so that commits run
// while chunks keep coming (group commits, writes behind).
func TestAckNeverOvertakesCommit(t *testing.T) {
	s3 := s3test.Start(t)
	dir := t.TempDir()
	l := startLogship(t, s3, dir, options{})
	secrets := map[string]string{"DB_PASSWORD": "hunter2-correct-horse", "API_TOKEN": "tok_9f8e7d6c5b4a"}
	var raw strings.Builder
	var chunks []string
	for i := range 600 {
		var c strings.Builder
		for j := range 40 + i%70 {
			fmt.Fprintf(&c, "line %d.%d of the plan: aws_instance.web[%d] still creating\n", i, j, j%7)
			if (i+j)%23 == 0 {
				fmt.Fprintf(&c, "export PW=hunter2-correct-horse TOKEN=tok_9f8e7d6c5b4a\n")
			}
		}
		chunks = append(chunks, c.String())
		raw.WriteString(c.String())
	}
	want := maskAll(raw.String(), secrets)
	runID := "run-acks-order"
	s := l.open(t, runID, secrets, nil)
	go func() {
		for i, c := range chunks {
			err := s.stream.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Chunk{Chunk: &logsv1.Chunk{
				Sequence: uint64(i + 1), Stream: logsv1.Stream_STREAM_STDOUT, Data: []byte(c)}}})
			if err != nil {
				return // the stream failed: Recv reports it
			}
		}
	}()
	runDir := filepath.Join(dir, runID)
	acks := 0
	for last := uint64(0); last < uint64(len(chunks)); {
		resp, err := s.stream.Recv()
		if err != nil {
			t.Fatalf("after ack %d: %v", last, err)
		}
		a := resp.GetAck()
		if a == nil {
			continue
		}
		acks++
		n := a.GetThroughSequence()
		st, err := spool.ReadState(runDir)
		if err != nil {
			t.Fatal(err)
		}
		if st.AckedSequence < n {
			t.Fatalf("Ack through %d received while the state on disk records %d", n, st.AckedSequence)
		}
		log, err := os.ReadFile(filepath.Join(runDir, "log"))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(log)) < st.MaskedBytes {
			t.Fatalf("Ack through %d: the state records %d bytes, the log file holds %d", n, st.MaskedBytes, len(log))
		}
		if !strings.HasPrefix(want, string(log[:st.MaskedBytes])) {
			t.Fatalf("Ack through %d: the log file's %d committed bytes are not the masked log's first bytes", n, st.MaskedBytes)
		}
		assertNoSecretIn(t, "the spooled log", log, secrets)
		last = n
	}
	closed := s.close(uint64(len(chunks)))
	checkFinal(t, s3, runID, closed, want)
	if acks < 2 {
		t.Errorf("%d acks for %d chunks sent without waiting", acks, len(chunks))
	}
}
