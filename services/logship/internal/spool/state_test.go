package spool

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStateSlots: each save writes the other slot; a save cut short (its
// slot partly written, at any length) leaves the state saved before it;
// a state file damaged in both slots is an error, not a new run; an
// older logship's state.json is read and replaced at the first save.
func TestStateSlots(t *testing.T) {
	saved := func(seq uint64) State { return State{RunID: "run-1", AckedSequence: seq, MaskedBytes: int64(seq) * 10} }
	for _, tc := range []struct {
		name    string
		legacy  *State // state.json of an older logship
		saves   int    // states saved (AckedSequence 1..saves)
		torn    int    // then bytes of one more save written (0: none)
		damage  bool   // then both slots overwritten with junk
		want    uint64 // AckedSequence read back
		wantErr bool
	}{
		{name: "none", want: 0},
		{name: "one save", saves: 1, want: 1},
		{name: "saves in turn", saves: 5, want: 5},
		{name: "torn at the start", saves: 3, torn: 1, want: 3},
		{name: "torn in the JSON", saves: 3, torn: 30, want: 3},
		{name: "torn before the checksum", saves: 4, torn: 70, want: 4},
		{name: "torn in the first save", torn: 20, want: 0},
		{name: "both slots damaged", saves: 2, damage: true, wantErr: true},
		{name: "older logship's state", legacy: &State{RunID: "run-1", AckedSequence: 7}, want: 7},
		{name: "older logship's state, then saves", legacy: &State{RunID: "run-1", AckedSequence: 7}, saves: 2, want: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.legacy != nil {
				b, _ := json.Marshal(tc.legacy)
				if err := os.WriteFile(filepath.Join(dir, legacyStateName), b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			sf := &stateFile{path: filepath.Join(dir, stateName)}
			var st State
			if err := sf.read(&st); err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= tc.saves; i++ {
				if err := sf.save(saved(uint64(i))); err != nil {
					t.Fatal(err)
				}
			}
			if tc.torn > 0 {
				// What a crash in the middle of the next save leaves: the
				// start of its slot written over the older one.
				b, _ := json.Marshal(saved(uint64(tc.saves + 1)))
				slot, err := encodeSlot(b, sf.gen+1)
				if err != nil {
					t.Fatal(err)
				}
				if sf.f == nil {
					if err := sf.open(); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := sf.f.WriteAt(slot[:tc.torn], int64(1-sf.slot)*slotSize); err != nil {
					t.Fatal(err)
				}
			}
			if tc.damage {
				junk := []byte(strings.Repeat("x", 2*slotSize))
				if _, err := sf.f.WriteAt(junk, 0); err != nil {
					t.Fatal(err)
				}
			}
			sf.close()
			got, err := ReadState(dir)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("ReadState: no error, state %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.AckedSequence != tc.want {
				t.Errorf("AckedSequence read back = %d, want %d", got.AckedSequence, tc.want)
			}
			if _, err := os.Stat(filepath.Join(dir, legacyStateName)); (err == nil) != (tc.legacy != nil && tc.saves == 0) {
				t.Errorf("state.json left: %v, want it only before the first save", err == nil)
			}
		})
	}
}

// TestStateSlotTooBig refuses a state that does not fit a slot.
func TestStateSlotTooBig(t *testing.T) {
	sf := &stateFile{path: filepath.Join(t.TempDir(), stateName)}
	if err := sf.save(State{RunID: strings.Repeat("r", slotSize)}); err == nil {
		t.Fatal("a state bigger than a slot: no error")
	}
}
