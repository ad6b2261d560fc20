package s3log_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hangar-dev/hangar/services/logship/internal/s3log"
	"github.com/hangar-dev/hangar/services/logship/internal/s3test"
)

// TestFinalNeverReplaced: over a real S3 API (gofakes3 on a socket), a
// final object is written only if there is none (a second PutFinal gets
// ErrFinalExists and the first stays), StatFinal reads its metadata back,
// and DeleteChunks removes the live chunks.
func TestFinalNeverReplaced(t *testing.T) {
	s3 := s3test.Start(t)
	store, err := s3log.New(s3.Client(), s3test.Bucket, "runs/", prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := store.StatFinal(ctx, "r1"); !errors.Is(err, s3log.ErrNotFound) {
		t.Fatalf("StatFinal of no object: %v, want ErrNotFound", err)
	}
	for i, c := range []string{"part one ", "part two\n"} {
		if _, err := store.PutChunk(ctx, "r1", uint64(i+1), strings.NewReader(c), int64(len(c))); err != nil {
			t.Fatal(err)
		}
	}
	first := s3log.Final{Bytes: 5, SHA256: "aa", LastSequence: 7, Incomplete: true}
	if err := store.PutFinal(ctx, "r1", strings.NewReader("first"), first); err != nil {
		t.Fatal(err)
	}
	err = store.PutFinal(ctx, "r1", strings.NewReader("other"), s3log.Final{Bytes: 5, SHA256: "bb", LastSequence: 9})
	if !errors.Is(err, s3log.ErrFinalExists) {
		t.Fatalf("second PutFinal: %v, want ErrFinalExists", err)
	}
	if body, _, _ := s3.Get(t, "runs/r1/log"); string(body) != "first" {
		t.Errorf("final object %q, want the first kept", body)
	}
	got, err := store.StatFinal(ctx, "r1")
	if err != nil || got != first {
		t.Errorf("StatFinal = %+v, %v; want %+v", got, err, first)
	}
	if err := store.DeleteChunks(ctx, "r1", 2); err != nil {
		t.Fatal(err)
	}
	if keys := s3.List(t, "runs/r1/"); len(keys) != 1 || keys[0] != "runs/r1/log" {
		t.Errorf("objects after DeleteChunks: %q", keys)
	}
}
