package policyserver

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hangar-dev/hangar/services/policy/internal/engine"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestStatusFor(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancel2 := context.WithTimeout(context.Background(), 0)
	defer cancel2()
	evalErr := fmt.Errorf("%w: eval_cancel_error: caller cancelled query execution", engine.ErrEvaluation)
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want codes.Code
	}{
		{"evaluation error", context.Background(), fmt.Errorf("%w: eval_conflict_error", engine.ErrEvaluation), codes.Internal},
		{"invalid deny set", context.Background(), fmt.Errorf("%w: deny holds a number (1)", engine.ErrInvalidDeny), codes.Internal},
		{"caller cancelled", cancelled, evalErr, codes.Canceled},
		{"deadline exceeded", expired, evalErr, codes.DeadlineExceeded},
		{"wrapped context error", context.Background(), fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := statusFor(tt.ctx, tt.err)
			if status.Code(got) != tt.want {
				t.Errorf("statusFor() = %v, want %v", got, tt.want)
			}
			if errors.Is(tt.err, engine.ErrEvaluation) && status.Convert(got).Message() != "evaluate: "+tt.err.Error() {
				t.Errorf("message = %q", status.Convert(got).Message())
			}
		})
	}
}
