// Package ship serves hangar.logs.v1.LogService: the Ship stream from
// executors and the Tail stream to readers, over the runs of a
// runlog.Manager, with gRPC status codes chosen here.
package ship

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
	"github.com/hangar-dev/hangar/platform/telemetry"
	"github.com/hangar-dev/hangar/services/logship/internal/runlog"
	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
)

// tailChunk is the largest data slice of one TailResponse.
const tailChunk = 64 << 10

// FinalReader reads final logs from S3 (s3log.Store).
type FinalReader interface {
	GetFinal(ctx context.Context, runID string, offset int64) (*s3log.Object, error)
}

// Deps are the Server's collaborators.
type Deps struct {
	Runs       *runlog.Manager
	Finals     FinalReader
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
	Logger     *slog.Logger
	// Authorize checks who may write the log an Open names (mutual TLS);
	// nil lets anyone (plaintext on loopback or HANGAR_INSECURE_PLAINTEXT).
	Authorize Authorizer
}

// Server implements logsv1.LogServiceServer.
type Server struct {
	logsv1.UnimplementedLogServiceServer
	d Deps
}

// New returns a Server.
func New(d Deps) *Server {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{d: d}
}

// Ship implements the Ship stream; see the proto for the contract. Chunks
// are masked into the spool as they arrive and committed in groups (see
// groupCommit): one Ack covers every chunk of a commit.
func (s *Server) Ship(stream logsv1.LogService_ShipServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	open := first.GetOpen()
	if open == nil {
		return status.Error(codes.FailedPrecondition, "the first message of a Ship stream must be Open")
	}
	if open.GetRunId() == "" {
		return status.Error(codes.InvalidArgument, "Open without run id")
	}
	current := func() bool { return true }
	if s.d.Authorize != nil {
		if current, err = s.d.Authorize(stream.Context(), open); err != nil {
			s.d.Logger.Warn("refused a Ship stream", "run_id", open.GetRunId(), "err", status.Convert(err).Message())
			return err
		}
	}
	ctx := telemetry.Extract(stream.Context(), s.d.Propagator, open.GetTraceContext())
	ctx, span := s.d.Tracer.Start(ctx, "logship.Ship", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("hangar.run_id", open.GetRunId()),
			attribute.String("hangar.pool_id", open.GetPoolId()),
			attribute.String("hangar.stack_id", open.GetStackId()),
			attribute.Int("hangar.secrets", len(open.GetSecrets()))))
	defer span.End()
	err = s.ship(ctx, stream, open, span, current)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, status.Convert(err).Code().String())
	}
	return err
}

func (s *Server) ship(ctx context.Context, stream logsv1.LogService_ShipServer, open *logsv1.Open, span trace.Span, current func() bool) error {
	req := runlog.OpenRequest{RunID: open.GetRunId(), PoolID: open.GetPoolId(), StackID: open.GetStackId()}
	for _, sec := range open.GetSecrets() {
		req.Secrets = append(req.Secrets, runlog.Secret{Name: sec.GetName(), Value: sec.GetValue()})
	}
	sess, next, err := s.d.Runs.Open(req)
	if err != nil {
		return s.toStatus(open.GetRunId(), "open", err)
	}
	span.SetAttributes(attribute.Int64("hangar.next_sequence", int64(next)))
	if err := stream.Send(&logsv1.ShipResponse{Kind: &logsv1.ShipResponse_Opened{Opened: &logsv1.Opened{NextSequence: next}}}); err != nil {
		return err
	}
	var chunks int64
	defer func() { span.SetAttributes(attribute.Int64("hangar.chunks", chunks)) }()

	// Responses come from this goroutine (resends, Closed) and from the
	// committer (Acks).
	var sendMu sync.Mutex
	send := func(m *logsv1.ShipResponse) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(m)
	}
	ack := func(through uint64) error {
		return send(&logsv1.ShipResponse{Kind: &logsv1.ShipResponse_Ack{Ack: &logsv1.Ack{ThroughSequence: through}}})
	}
	gc := startGroupCommit(sess, ack)
	defer gc.stop()
	// Messages are received by a goroutine of their own, so that a failed
	// commit ends the stream even while the executor waits for
	// acknowledgements: returning from the handler makes its Recv fail.
	msgs := make(chan received, 4)
	done := make(chan struct{})
	defer close(done)
	go func() {
		for {
			msg, err := stream.Recv()
			select {
			case msgs <- received{msg, err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()
	for {
		var in received
		select {
		case in = <-msgs:
		case <-gc.failed:
			return s.commitFailed(open.GetRunId(), gc.err)
		}
		msg, err := in.msg, in.err
		if errors.Is(err, io.EOF) {
			return nil // the executor will reopen or has nothing more to say
		}
		if err != nil {
			return err
		}
		if !current() {
			return status.Errorf(codes.PermissionDenied, "log %s: a newer lease of the run ships its log now", open.GetRunId())
		}
		switch k := msg.GetKind().(type) {
		case *logsv1.ShipRequest_Chunk:
			chunks++
			data := k.Chunk.GetData()
			through, resend, err := sess.Write(runlog.Chunk{Sequence: k.Chunk.GetSequence(), Stream: streamName(k.Chunk.GetStream()),
				Data: data, Time: chunkTime(k.Chunk.GetTimeUnixMs())})
			if err != nil {
				return s.toStatus(open.GetRunId(), "chunk", err)
			}
			if resend {
				if err := ack(through); err != nil {
					return err
				}
				continue
			}
			gc.wrote()
		case *logsv1.ShipRequest_Close:
			if err := gc.stop(); err != nil {
				return s.commitFailed(open.GetRunId(), err)
			}
			closed, err := sess.Close(ctx, k.Close.GetLastSequence())
			if err != nil {
				return s.toStatus(open.GetRunId(), "close", err)
			}
			span.SetAttributes(attribute.Int64("hangar.log_bytes", closed.Bytes),
				attribute.Int64("hangar.log_bytes_truncated", closed.Truncated))
			return send(&logsv1.ShipResponse{Kind: &logsv1.ShipResponse_Closed{Closed: &logsv1.Closed{
				LogKey: closed.Key, Bytes: uint64(closed.Bytes), Sha256: closed.SHA256}}})
		case *logsv1.ShipRequest_Open:
			return status.Error(codes.FailedPrecondition, "Open sent twice on one Ship stream")
		default:
			return status.Error(codes.InvalidArgument, "empty ShipRequest")
		}
	}
}

// received is the result of one Recv.
type received struct {
	msg *logsv1.ShipRequest
	err error
}

// commitFailed maps the error of a commit (or of the Ack after it).
func (s *Server) commitFailed(runID string, err error) error {
	if _, ok := status.FromError(err); ok {
		return err // sending the Ack failed: the stream's own error
	}
	return s.toStatus(runID, "commit", err)
}

// streamName names a chunk's stream for the standard output lines.
func streamName(s logsv1.Stream) runlog.Stream {
	switch s {
	case logsv1.Stream_STREAM_STDOUT:
		return runlog.StreamStdout
	case logsv1.Stream_STREAM_STDERR:
		return runlog.StreamStderr
	case logsv1.Stream_STREAM_SYSTEM:
		return runlog.StreamSystem
	}
	return ""
}

// chunkTime converts a chunk's time; zero (unset) stays the zero time.
func chunkTime(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// toStatus maps runlog errors to gRPC statuses. Errors never carry secret
// values: runlog's come from sequence numbers, files and S3.
func (s *Server) toStatus(runID, op string, err error) error {
	switch {
	case errors.Is(err, runlog.ErrGap):
		return status.Error(codes.OutOfRange, err.Error())
	case errors.Is(err, runlog.ErrInvalidRunID):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, runlog.ErrSuperseded):
		return status.Error(codes.Aborted, err.Error())
	case errors.Is(err, runlog.ErrClosed):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, runlog.ErrSecretsTooLarge):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, runlog.ErrSpoolFull):
		// The executor retries: the run is taken once there is room.
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	s.d.Logger.Error("ship failed", "run_id", runID, "op", op, "err", err)
	return status.Error(codes.Internal, op+": "+err.Error())
}

// Tail implements the Tail stream: from the spool while logship holds the
// run, else from the final object in S3.
//
// Offsets are those of the stored log. While the run goes on, Tail shows
// the committed bytes of the log's head live (the first half of
// HANGAR_LOG_MAX_BYTES, that is the whole log of a run within the limit
// until it passes half of it); the bytes after the head are shown when
// the log is closed: for a log within the limit, the rest of it; else the
// truncation notice and the kept tail. The stream thus always reads the
// stored log, byte for byte.
func (s *Server) Tail(req *logsv1.TailRequest, stream logsv1.LogService_TailServer) error {
	if req.GetRunId() == "" {
		return status.Error(codes.InvalidArgument, "Tail without run id")
	}
	ctx := stream.Context()
	offset := int64(req.GetOffset())
	rd, err := s.d.Runs.NewReader(req.GetRunId())
	if err == nil {
		defer rd.Close()
		for {
			data, end, err := rd.Next(ctx, offset, tailChunk)
			if err != nil {
				if ctx.Err() != nil {
					return status.FromContextError(ctx.Err()).Err()
				}
				// The run finished meanwhile: continue from S3.
				s.d.Logger.Debug("tail: spool read failed, continuing from S3", "run_id", req.GetRunId(), "err", err)
				break
			}
			if err := stream.Send(&logsv1.TailResponse{Offset: uint64(offset), Data: data, End: end}); err != nil {
				return err
			}
			if end {
				return nil
			}
			offset += int64(len(data))
		}
	}
	return s.tailFinal(ctx, stream, req.GetRunId(), offset)
}

func (s *Server) tailFinal(ctx context.Context, stream logsv1.LogService_TailServer, runID string, offset int64) error {
	obj, err := s.d.Finals.GetFinal(ctx, runID, offset)
	if errors.Is(err, s3log.ErrNotFound) {
		return status.Errorf(codes.NotFound, "no log for run %q", runID)
	}
	if err != nil {
		s.d.Logger.Warn("tail: reading the final log from S3", "run_id", runID, "err", err)
		return status.Error(codes.Unavailable, "reading the final log from S3: "+err.Error())
	}
	defer obj.Body.Close()
	buf := make([]byte, tailChunk)
	for {
		n, rerr := io.ReadFull(obj.Body, buf)
		if n > 0 {
			if err := stream.Send(&logsv1.TailResponse{Offset: uint64(offset), Data: buf[:n]}); err != nil {
				return err
			}
			offset += int64(n)
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			return stream.Send(&logsv1.TailResponse{Offset: uint64(max(offset, obj.Size)), End: true})
		}
		if rerr != nil {
			return status.Error(codes.Unavailable, "reading the final log from S3: "+rerr.Error())
		}
	}
}
