package ship_test

import (
	"strconv"
	"testing"
	"time"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
)

// BenchmarkFirstAck times a run's first line: one iteration opens a run,
// sends one chunk of one line and waits for its Ack (the commit: the
// spool's fsyncs), then closes the run. ms-ack/op is the time from sending
// the chunk to its Ack: how much later than its arrival the line can be
// read by Tail.
func BenchmarkFirstAck(b *testing.B) {
	client := startBenchLogship(b, 0, nil, true)
	var acking time.Duration
	for i := range b.N {
		st, err := client.Ship(b.Context())
		if err != nil {
			b.Fatal(err)
		}
		if err := st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: &logsv1.Open{RunId: "first-" + strconv.Itoa(i)}}}); err != nil {
			b.Fatal(err)
		}
		if resp, err := st.Recv(); err != nil || resp.GetOpened() == nil {
			b.Fatalf("Open: %v %v", resp, err)
		}
		start := time.Now()
		if err := st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Chunk{Chunk: &logsv1.Chunk{
			Sequence: 1, Stream: logsv1.Stream_STREAM_STDOUT, Data: []byte("Initializing the backend...\n")}}}); err != nil {
			b.Fatal(err)
		}
		for {
			resp, err := st.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if resp.GetAck().GetThroughSequence() == 1 {
				break
			}
		}
		acking += time.Since(start)
		if err := st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Close{Close: &logsv1.Close{LastSequence: 1}}}); err != nil {
			b.Fatal(err)
		}
		for {
			resp, err := st.Recv()
			if err != nil {
				b.Fatal(err)
			}
			if resp.GetClosed() != nil {
				break
			}
		}
	}
	b.ReportMetric(float64(acking.Microseconds())/1000/float64(b.N), "ms-ack/op")
}
