// Package seen remembers which run ids a gateway has received, across restarts, so
// that a run delivered twice is handled once and a replayed envelope is refused.
//
// An id is kept until its envelope has expired (plus the clock skew): after that,
// the envelope itself is refused as expired, so the id need not be remembered.
// The store is an append-only file of "<run id> <expiry unix ms>" lines (and
// "<run id> <expiry> done" once the gateway decided the run), fsynced on every
// record and compacted when it is opened.
//
// A run recorded but not decided by an earlier life of the gateway (it stopped
// in the middle of the intake, before acknowledging the MQTT message) may be
// recorded once more: its redelivery is the gateway's own unfinished work, not a
// replay.
package seen

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hangar-dev/hangar/platform/atomicfile"
)

// Store is a persistent set of run ids. It is safe for concurrent use.
type Store struct {
	mu     sync.Mutex
	path   string
	file   *os.File
	ids    map[string]int64 // run id -> forget after (unix ms)
	done   map[string]bool  // decided
	retry  map[string]bool  // recorded, not decided, by an earlier life
	now    func() time.Time
	writes int
}

// Open opens (or creates) the store of run ids in dir.
func Open(dir string, now func() time.Time) (*Store, error) {
	return OpenFile(dir, "seen-runs.log", now)
}

// OpenFile opens (or creates) a store kept in the file name of dir. The
// gateway keeps run ids in one ("seen-runs.log") and command ids in another
// ("seen-commands.log").
func OpenFile(dir, name string, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("seen: create %s: %w", dir, err)
	}
	s := &Store{path: filepath.Join(dir, name), ids: map[string]int64{}, done: map[string]bool{}, retry: map[string]bool{}, now: now}
	if err := s.load(); err != nil {
		return nil, err
	}
	for id := range s.ids {
		if !s.done[id] {
			s.retry[id] = true
		}
	}
	if err := s.compact(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Store) load() error {
	f, err := os.Open(s.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("seen: open %s: %w", s.path, err)
	}
	defer f.Close()
	nowMs := s.now().UnixMilli()
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || len(f) > 3 || (len(f) == 3 && f[2] != "done") {
			// A torn last line after a crash: everything before it is intact.
			continue
		}
		id := f[0]
		ms, perr := strconv.ParseInt(f[1], 10, 64)
		if perr != nil {
			continue
		}
		if ms > nowMs {
			s.ids[id] = ms
			if len(f) == 3 {
				s.done[id] = true
			}
		} else {
			delete(s.ids, id) // expired, or forgotten by a later line
			delete(s.done, id)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("seen: read %s: %w", s.path, err)
	}
	return nil
}

// compact rewrites the file with the live ids only, atomically.
func (s *Store) compact() error {
	err := atomicfile.WriteWith(s.path, 0o600, func(f io.Writer) error {
		w := bufio.NewWriter(f)
		for id, ms := range s.ids {
			if s.done[id] {
				fmt.Fprintf(w, "%s %d done\n", id, ms)
			} else {
				fmt.Fprintf(w, "%s %d\n", id, ms)
			}
		}
		return w.Flush()
	})
	if err != nil {
		return fmt.Errorf("seen: compact: %w", err)
	}
	if s.file != nil {
		s.file.Close()
	}
	s.file, err = os.OpenFile(s.path, os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("seen: reopen: %w", err)
	}
	s.writes = 0
	return nil
}

// Record marks runID as received, to be remembered until forgetAfter. It returns
// true the first time an id is recorded and false if it was already known. The
// record is durable when Record returns.
func (s *Store) Record(runID string, forgetAfter time.Time) (bool, error) {
	if runID == "" || strings.ContainsAny(runID, " \n") {
		return false, fmt.Errorf("seen: invalid run id %q", runID)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	nowMs := s.now().UnixMilli()
	if ms, ok := s.ids[runID]; ok && ms > nowMs {
		if s.retry[runID] {
			delete(s.retry, runID) // once: concurrent copies in this life are refused
			return true, nil
		}
		return false, nil
	}
	ms := forgetAfter.UnixMilli()
	if _, err := fmt.Fprintf(s.file, "%s %d\n", runID, ms); err != nil {
		return false, fmt.Errorf("seen: record: %w", err)
	}
	if err := s.file.Sync(); err != nil {
		return false, fmt.Errorf("seen: sync: %w", err)
	}
	s.ids[runID] = ms
	s.writes++
	if s.writes > 4*len(s.ids)+1024 {
		s.expire(nowMs)
		if err := s.compact(); err != nil {
			return true, err
		}
	}
	return true, nil
}

// Done records that the gateway decided runID (denied, failed, or admitted and
// stored): a later copy is a replay even across a restart.
func (s *Store) Done(runID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms, ok := s.ids[runID]
	if !ok || s.done[runID] {
		return nil
	}
	if _, err := fmt.Fprintf(s.file, "%s %d done\n", runID, ms); err != nil {
		return fmt.Errorf("seen: done: %w", err)
	}
	if err := s.file.Sync(); err != nil {
		return fmt.Errorf("seen: sync: %w", err)
	}
	s.done[runID] = true
	return nil
}

// Known reports whether runID is remembered (received and not yet expired).
func (s *Store) Known(runID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.ids[runID]
	return ok
}

// Decided reports whether runID is known and its decision recorded (Done). A
// known id that is not decided is being decided right now (another delivery
// is in the intake) or was left undecided by an earlier life.
func (s *Store) Decided(runID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, known := s.ids[runID]
	return known && s.done[runID]
}

// Forget removes runID, so that the same id may be received again. Used when the
// gateway could not take a run it recorded (e.g. it failed to queue it).
func (s *Store) Forget(runID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.ids[runID]; !ok {
		return nil
	}
	delete(s.ids, runID)
	delete(s.done, runID)
	delete(s.retry, runID)
	if _, err := fmt.Fprintf(s.file, "%s %d\n", runID, 0); err != nil {
		return fmt.Errorf("seen: forget: %w", err)
	}
	return s.file.Sync()
}

func (s *Store) expire(nowMs int64) {
	for id, ms := range s.ids {
		if ms <= nowMs {
			delete(s.ids, id)
			delete(s.done, id)
			delete(s.retry, id)
		}
	}
}

// Len is the number of ids remembered.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

// Close closes the file.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.file == nil {
		return nil
	}
	err := s.file.Close()
	s.file = nil
	return err
}
