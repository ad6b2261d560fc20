package spool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/hangar-dev/hangar/platform/atomicfile"
)

// The state file (<run>/state) holds two slots of slotSize bytes. Each
// save writes the slot not holding the last state, in place, then
// fdatasyncs the file: one flush per save, where replacing a file by
// rename costs three (the new file, the rename, the directory), which
// made half of a commit's time. A save cut short by a crash can only
// damage the slot it was writing; the other one holds the state saved
// before. A slot is the state's JSON, a newline, then the save's
// generation and the CRC-32C of the JSON and the generation, in decimal,
// and a newline; zeros pad it. Reading takes the valid slot of the
// highest generation.
//
// A spool written by an older logship has state.json instead (one JSON
// document, replaced by rename): it is read when the state file has no
// valid slot, and removed after the first save.
const (
	stateName       = "state"
	slotSize        = 4096
	legacyStateName = "state.json"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// stateFile is a run's state file.
type stateFile struct {
	path string

	mu     sync.Mutex // one save at a time
	f      *os.File   // nil until the first save
	gen    uint64     // generation of the last state saved or read
	slot   int        // slot holding it
	legacy bool       // state.json may still exist
}

// encodeSlot returns the slot of st's JSON b at generation gen.
func encodeSlot(b []byte, gen uint64) ([]byte, error) {
	g := strconv.FormatUint(gen, 10)
	sum := crc32.Update(crc32.Checksum(b, castagnoli), castagnoli, []byte(g))
	slot := make([]byte, 0, slotSize)
	slot = append(slot, b...)
	slot = append(slot, '\n')
	slot = append(slot, g...)
	slot = append(slot, ' ')
	slot = strconv.AppendUint(slot, uint64(sum), 10)
	slot = append(slot, '\n')
	if len(slot) > slotSize || bytes.IndexByte(b, '\n') >= 0 {
		return nil, fmt.Errorf("state of %d bytes does not fit a slot of %d", len(b), slotSize)
	}
	return slot[:slotSize], nil
}

// decodeSlot returns the state JSON and generation of a slot, ok false if
// the slot does not hold a whole save.
func decodeSlot(slot []byte) (b []byte, gen uint64, ok bool) {
	i := bytes.IndexByte(slot, '\n')
	if i <= 0 {
		return nil, 0, false
	}
	b = slot[:i]
	rest := slot[i+1:]
	j := bytes.IndexByte(rest, '\n')
	if j < 0 {
		return nil, 0, false
	}
	g, c, found := bytes.Cut(rest[:j], []byte{' '})
	if !found {
		return nil, 0, false
	}
	gen, err := strconv.ParseUint(string(g), 10, 64)
	if err != nil {
		return nil, 0, false
	}
	sum, err := strconv.ParseUint(string(c), 10, 32)
	if err != nil || uint32(sum) != crc32.Update(crc32.Checksum(b, castagnoli), castagnoli, g) {
		return nil, 0, false
	}
	return b, gen, true
}

// read reads the last state saved into st (left as is when the run has
// none yet).
func (sf *stateFile) read(st *State) error {
	data, err := os.ReadFile(sf.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read run state: %w", err)
	}
	best, found := []byte(nil), false
	for k := 0; k*slotSize < len(data); k++ {
		b, gen, ok := decodeSlot(data[k*slotSize : min(len(data), (k+1)*slotSize)])
		if ok && (!found || gen > sf.gen) {
			best, found, sf.gen, sf.slot = b, true, gen, k
		}
	}
	legacy := filepath.Join(filepath.Dir(sf.path), legacyStateName)
	if !found {
		// A save cut short damages one slot only: with the other one
		// never written, no save was made whole (the first was cut
		// short, nothing was committed); with both written, the file
		// was damaged otherwise.
		if !neverWritten(data, 0) && !neverWritten(data, 1) {
			return fmt.Errorf("read run state %s: no valid slot", sf.path)
		}
		// No state saved in this format: an older logship's, or none.
		b, err := os.ReadFile(legacy)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read run state: %w", err)
		}
		best, sf.slot = b, 1
	}
	if _, err := os.Stat(legacy); err == nil {
		sf.legacy = true
	}
	if err := json.Unmarshal(best, st); err != nil {
		return fmt.Errorf("read run state %s: %w", sf.path, err)
	}
	return nil
}

// neverWritten reports whether slot k of the state file's data holds only
// zeros (or is missing).
func neverWritten(data []byte, k int) bool {
	if k*slotSize >= len(data) {
		return true
	}
	return len(bytes.Trim(data[k*slotSize:min(len(data), (k+1)*slotSize)], "\x00")) == 0
}

// save records st durably.
func (sf *stateFile) save(st State) error {
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	sf.mu.Lock()
	defer sf.mu.Unlock()
	slot, err := encodeSlot(b, sf.gen+1)
	if err != nil {
		return err
	}
	if sf.f == nil {
		if err := sf.open(); err != nil {
			return err
		}
	}
	next := 1 - sf.slot
	if _, err := sf.f.WriteAt(slot, int64(next)*slotSize); err != nil {
		return err
	}
	if err := fdatasync(sf.f); err != nil {
		return err
	}
	sf.gen, sf.slot = sf.gen+1, next
	if sf.legacy {
		// The state file holds the state now: an older logship's state.json
		// is not read again (nor, once this is durable, needed).
		if err := os.Remove(filepath.Join(filepath.Dir(sf.path), legacyStateName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		sf.legacy = false
	}
	return nil
}

// open opens the state file for saves; a new one gets its two slots and
// its directory entry made durable first.
func (sf *stateFile) open() error {
	f, err := os.OpenFile(sf.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	info, err := f.Stat()
	if err == nil && info.Size() < 2*slotSize {
		err = f.Truncate(2 * slotSize)
		if err == nil {
			err = f.Sync()
		}
		if err == nil {
			err = atomicfile.SyncDir(filepath.Dir(sf.path))
		}
	}
	if err != nil {
		f.Close()
		return err
	}
	sf.f = f
	return nil
}

// close closes the state file.
func (sf *stateFile) close() {
	sf.mu.Lock()
	defer sf.mu.Unlock()
	if sf.f != nil {
		sf.f.Close()
		sf.f = nil
	}
}

// ReadState returns the last state saved of the run whose spool directory
// is runDir, without opening the run (for tests and tools).
func ReadState(runDir string) (State, error) {
	var st State
	sf := &stateFile{path: filepath.Join(runDir, stateName)}
	err := sf.read(&st)
	return st, err
}
