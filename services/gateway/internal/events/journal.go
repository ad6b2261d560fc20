package events

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	eventv1 "github.com/hangar-dev/hangar/gen/go/hangar/event/v1"
	"github.com/hangar-dev/hangar/platform/atomicfile"
)

// Journal makes the outbox survive a gateway restart: every event is appended
// (fsynced) before it is queued, every broker acknowledgement is appended after
// it, and the per-run sequence counters are recovered, so that after a restart
// the events not yet acknowledged are published again (with the same ids) and
// numbering goes on where it stopped.
//
// The file is line-oriented: "e <base64 of the Event>" for an event, "a <event
// id>" for an acknowledgement, "s <run id> <last sequence>" for a counter kept by
// compaction. It is compacted when opened.
type Journal struct {
	mu   sync.Mutex
	path string
	f    *os.File
}

// Recovered is what a journal held when it was opened.
type Recovered struct {
	// Pending are the events not acknowledged, in their original order.
	Pending []*eventv1.Event
	// Sequences are the last sequence numbers of runs without a final event.
	Sequences map[string]uint64
}

// OpenJournal opens (or creates) the journal in dir and returns what it held.
func OpenJournal(dir string) (*Journal, *Recovered, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("events journal: %w", err)
	}
	j := &Journal{path: filepath.Join(dir, "events.journal")}
	rec, err := j.load()
	if err != nil {
		return nil, nil, err
	}
	if err := j.compact(rec); err != nil {
		return nil, nil, err
	}
	return j, rec, nil
}

func (j *Journal) load() (*Recovered, error) {
	rec := &Recovered{Sequences: map[string]uint64{}}
	f, err := os.Open(j.path)
	if errors.Is(err, os.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return nil, fmt.Errorf("events journal: %w", err)
	}
	defer f.Close()
	var order []string
	pending := map[string]*eventv1.Event{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		kind, rest, _ := strings.Cut(sc.Text(), " ")
		switch kind {
		case "e":
			b, err := base64.StdEncoding.DecodeString(rest)
			ev := &eventv1.Event{}
			if err != nil || proto.Unmarshal(b, ev) != nil {
				continue // a torn last line after a crash
			}
			if _, dup := pending[ev.GetEventId()]; !dup {
				order = append(order, ev.GetEventId())
			}
			pending[ev.GetEventId()] = ev
			if ev.GetSequence() > 0 {
				if isFinal(ev) {
					delete(rec.Sequences, ev.GetRunId())
				} else if ev.GetSequence() > rec.Sequences[ev.GetRunId()] {
					rec.Sequences[ev.GetRunId()] = ev.GetSequence()
				}
			}
		case "a":
			delete(pending, rest)
		case "s":
			run, n, ok := strings.Cut(rest, " ")
			if seq, err := strconv.ParseUint(n, 10, 64); ok && err == nil && seq > rec.Sequences[run] {
				rec.Sequences[run] = seq
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("events journal: read: %w", err)
	}
	for _, id := range order {
		if ev, ok := pending[id]; ok {
			rec.Pending = append(rec.Pending, ev)
			delete(pending, id)
		}
	}
	return rec, nil
}

// compact rewrites the journal with only what is still needed.
func (j *Journal) compact(rec *Recovered) error {
	err := atomicfile.WriteWith(j.path, 0o600, func(f io.Writer) error {
		w := bufio.NewWriter(f)
		for run, seq := range rec.Sequences {
			fmt.Fprintf(w, "s %s %d\n", run, seq)
		}
		for _, ev := range rec.Pending {
			b, _ := proto.Marshal(ev)
			fmt.Fprintf(w, "e %s\n", base64.StdEncoding.EncodeToString(b))
		}
		return w.Flush()
	})
	if err != nil {
		return fmt.Errorf("events journal: compact: %w", err)
	}
	j.f, err = os.OpenFile(j.path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("events journal: %w", err)
	}
	return nil
}

// Rewrite replaces the journal's content with rec (compaction while running).
func (j *Journal) Rewrite(rec *Recovered) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if err := j.f.Close(); err != nil {
		return err
	}
	return j.compact(rec)
}

// Append records an event durably.
func (j *Journal) Append(ev *eventv1.Event) error {
	b, err := proto.Marshal(ev)
	if err != nil {
		return err
	}
	return j.write("e " + base64.StdEncoding.EncodeToString(b) + "\n")
}

// Acked records that the broker acknowledged an event.
func (j *Journal) Acked(eventID string) error { return j.write("a " + eventID + "\n") }

func (j *Journal) write(line string) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if _, err := j.f.WriteString(line); err != nil {
		return fmt.Errorf("events journal: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("events journal: %w", err)
	}
	return nil
}

// Close closes the file.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.f.Close()
}
