package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// cpuFollower follows the CPU time of a container's process tree from the
// host's /proc (the containers share the host's PID namespace view): the
// first process whose command line starts with prefix and holds marker, and
// every process under it. The time of processes that ended is in their
// parent's (cutime, cstime) once reaped; the tree is sampled every 20 ms
// until it is gone, so what its last 20 ms cost may be missed.
type cpuFollower struct {
	stop chan struct{}
	done chan time.Duration
}

// followCPU starts following the tree of the process matching prefix and
// marker (it may not have started yet).
func followCPU(prefix, marker string) *cpuFollower {
	f := &cpuFollower{stop: make(chan struct{}), done: make(chan time.Duration, 1)}
	go func() {
		var pid int
		var last time.Duration
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if pid == 0 {
				pid = findProc(prefix, marker)
			}
			if pid != 0 {
				t, ok := treeCPU(pid)
				if !ok {
					f.done <- last
					return
				}
				last = t
			}
			select {
			case <-f.stop:
				if pid != 0 {
					if t, ok := treeCPU(pid); ok {
						last = t
					}
				}
				f.done <- last
				return
			case <-tick.C:
			}
		}
	}()
	return f
}

// cpu stops following and returns the tree's CPU time last seen (0 if the
// process was never found). Call it once.
func (f *cpuFollower) cpu() time.Duration {
	close(f.stop)
	return <-f.done
}

// findProc is the first process whose command line (arguments joined by
// NULs) starts with prefix and holds marker, or 0.
func findProc(prefix, marker string) int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || !bytes.HasPrefix(cmdline, []byte(prefix)) || !bytes.Contains(cmdline, []byte(marker)) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(d)); err == nil {
			return pid
		}
	}
	return 0
}

// treeCPU is the CPU time of pid, of its reaped descendants and of every
// live process under it; false when pid is gone.
func treeCPU(pid int) (time.Duration, bool) {
	own, ok := procTimes(pid)
	if !ok {
		return 0, false
	}
	total := own
	queue := procChildren(pid)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if t, ok := procTimes(p); ok {
			total += t
		}
		queue = append(queue, procChildren(p)...)
	}
	return total, true
}

// procTimes is utime+stime+cutime+cstime of pid (/proc/PID/stat, in clock
// ticks of 1/100 s).
func procTimes(pid int) (time.Duration, bool) {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 15 {
		return 0, false
	}
	var ticks int64
	for _, v := range f[11:15] {
		t, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += t
	}
	return time.Duration(ticks) * 10 * time.Millisecond, true
}

// procChildren lists the children of pid's threads.
func procChildren(pid int) []int {
	tasks, _ := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/children")
	var out []int
	for _, t := range tasks {
		raw, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, s := range strings.Fields(string(raw)) {
			if c, err := strconv.Atoi(s); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}
