package ship

import (
	"context"
	"errors"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/platform/runcred"
	"github.com/hangar-dev/hangar/platform/serve"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Authorizer decides whether the caller of a Ship stream may write the log
// Open names (ADR 0009). On success it returns current, which the stream
// asks before each chunk: false once a newer lease of the run has opened
// its log, and the stream then ends.
type Authorizer func(ctx context.Context, open *logsv1.Open) (current func() bool, err error)

// CredentialAuthorizer checks Open.credential against the caller's
// certificate with c.
func CredentialAuthorizer(c *runcred.Checker) Authorizer {
	return func(ctx context.Context, open *logsv1.Open) (func() bool, error) {
		caller, ok := serve.PeerIdentity(ctx)
		if !ok {
			return nil, status.Error(codes.Unauthenticated, "Ship needs an executor certificate of the pool")
		}
		g, err := c.Check(open.GetCredential(), open.GetRunId(), caller)
		if err != nil {
			if errors.Is(err, runcred.ErrRefused) {
				return nil, status.Errorf(codes.PermissionDenied, "log %s: %v", open.GetRunId(), err)
			}
			return nil, status.Errorf(codes.Internal, "log %s: checking the run credential: %v", open.GetRunId(), err)
		}
		return func() bool { return c.Current(g) }, nil
	}
}
