package admission

import (
	"errors"
	"strings"
	"testing"
)

func TestReason(t *testing.T) {
	const gib = 1 << 30
	fixed := func(disk, mem uint64, derr, merr error) Probe {
		return Probe{
			FreeDisk:   func(string) (uint64, error) { return disk, derr },
			FreeMemory: func() (uint64, error) { return mem, merr },
		}
	}
	for _, tc := range []struct {
		name  string
		probe Probe
		th    Thresholds
		want  string
	}{
		{"enough", fixed(10*gib, 4*gib, nil, nil), Thresholds{gib, gib}, ""},
		{"low disk", fixed(gib/2, 4*gib, nil, nil), Thresholds{gib, gib}, "low disk: 512.0 MiB free in /w, below the minimum of 1.0 GiB"},
		{"low memory", fixed(10*gib, gib/4, nil, nil), Thresholds{gib, gib}, "low memory: 256.0 MiB available"},
		{"checks off", fixed(0, 0, nil, nil), Thresholds{}, ""},
		{"unreadable", fixed(0, 0, errors.New("boom"), nil), Thresholds{MinFreeDiskBytes: 1}, "cannot read free disk space of /w: boom"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tc.probe.Reason("/w", tc.th)
			if (tc.want == "") != (got == "") || !strings.HasPrefix(got, tc.want) {
				t.Fatalf("Reason = %q, want prefix %q", got, tc.want)
			}
		})
	}
}

func TestHostProbeReadsThisHost(t *testing.T) {
	p := HostProbe()
	if free, err := p.FreeDisk(t.TempDir()); err != nil || free == 0 {
		t.Fatalf("FreeDisk = %d, %v", free, err)
	}
	if mem, err := p.FreeMemory(); err != nil || mem == 0 {
		t.Fatalf("FreeMemory = %d, %v", mem, err)
	}
	if r := p.Reason(t.TempDir(), Thresholds{MinFreeDiskBytes: 1 << 62}); !strings.HasPrefix(r, "low disk") {
		t.Fatalf("an impossible minimum must be reported, got %q", r)
	}
}

func TestParseMemAvailable(t *testing.T) {
	got, err := parseMemAvailable([]byte("MemTotal: 100 kB\nMemAvailable:   2048 kB\n"))
	if err != nil || got != 2048*1024 {
		t.Fatalf("got %d, %v", got, err)
	}
	if _, err := parseMemAvailable([]byte("MemTotal: 1 kB\n")); err == nil {
		t.Fatal("missing line must be an error")
	}
}
