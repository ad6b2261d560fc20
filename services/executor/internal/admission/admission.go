// Package admission decides whether this host can take a new run: an executor
// whose free disk (in its work directory) or available memory is under the
// configured thresholds takes nothing new and says why, instead of failing runs
// in a loop.
package admission

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
)

// Thresholds are the minimums; zero disables a check.
type Thresholds struct {
	MinFreeDiskBytes   uint64
	MinFreeMemoryBytes uint64
}

// Probe reads the host's resources; tests substitute the readings.
type Probe struct {
	// FreeDisk returns the bytes available to unprivileged users under dir.
	FreeDisk func(dir string) (uint64, error)
	// FreeMemory returns the bytes of memory available for new work.
	FreeMemory func() (uint64, error)
}

// HostProbe reads the real host: statfs and /proc/meminfo's MemAvailable.
func HostProbe() Probe { return Probe{FreeDisk: statfsFree, FreeMemory: memAvailable} }

// Reason returns why the host must not take a new run, or "" when it can. A
// reading that fails is reported as the reason: better to take nothing than to
// fail runs blindly.
func (p Probe) Reason(dir string, t Thresholds) string {
	if t.MinFreeDiskBytes > 0 {
		free, err := p.FreeDisk(dir)
		switch {
		case err != nil:
			return fmt.Sprintf("cannot read free disk space of %s: %v", dir, err)
		case free < t.MinFreeDiskBytes:
			return fmt.Sprintf("low disk: %s free in %s, below the minimum of %s", human(free), dir, human(t.MinFreeDiskBytes))
		}
	}
	if t.MinFreeMemoryBytes > 0 {
		free, err := p.FreeMemory()
		switch {
		case err != nil:
			return fmt.Sprintf("cannot read available memory: %v", err)
		case free < t.MinFreeMemoryBytes:
			return fmt.Sprintf("low memory: %s available, below the minimum of %s", human(free), human(t.MinFreeMemoryBytes))
		}
	}
	return ""
}

func statfsFree(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

func memAvailable() (uint64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	return parseMemAvailable(b)
}

// parseMemAvailable reads "MemAvailable:  123456 kB" from /proc/meminfo.
func parseMemAvailable(b []byte) (uint64, error) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) >= 2 && string(f[0]) == "MemAvailable:" {
			kb, err := strconv.ParseUint(string(f[1]), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("MemAvailable: %w", err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("no MemAvailable line in /proc/meminfo")
}

func human(b uint64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%d B", b)
	}
	div, exp := uint64(unit), 0
	for n := b / unit; n >= unit; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(b)/float64(div), "KMGTPE"[exp])
}
