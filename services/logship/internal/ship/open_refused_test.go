package ship_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/services/logship/internal/runlog"
	"github.com/hangar-dev/hangar/services/logship/internal/s3test"
)

// TestOpenOverSecretCapRefused: an Open whose secrets exceed the per-run
// cap is refused with INVALID_ARGUMENT naming the cap, never a value.
func TestOpenOverSecretCapRefused(t *testing.T) {
	l := startLogship(t, s3test.Start(t), t.TempDir(), options{})
	st, err := l.client.Ship(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("v", runlog.MaxSecretBytes+1)
	open := &logsv1.Open{RunId: "run-big", Secrets: []*logsv1.Secret{{Name: "HUGE", Value: []byte(big)}}}
	if err := st.Send(&logsv1.ShipRequest{Kind: &logsv1.ShipRequest_Open{Open: open}}); err != nil {
		t.Fatal(err)
	}
	_, err = st.Recv()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "cap") || strings.Contains(err.Error(), "vvvvvv") {
		t.Errorf("Open over the cap: %v, want INVALID_ARGUMENT naming the cap", err)
	}
}
