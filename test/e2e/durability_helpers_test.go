package e2e

import (
	"bufio"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// This file holds what TestLogDurability needs beyond package harness: a
// logship that can be killed and started again with the same ports and spool
// directory, and a /metrics reader.

// liveChunks is the concatenation of the run's live chunk objects in key
// order, and their keys.
func liveChunks(t testing.TB, s *harness.S3, runID string) (string, []string) {
	t.Helper()
	keys := s.Keys(t, "runs/"+runID+"/chunks/")
	var b strings.Builder
	for _, k := range keys {
		body, _, ok := s.Get(t, k)
		if ok {
			b.Write(body)
		}
	}
	return b.String(), keys
}

// durMetrics reads a /metrics page and returns, for each metric name, the sum
// of its series (all label values).
func durMetrics(t testing.TB, debugAddr string) map[string]float64 {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://" + debugAddr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics of %s: %v", debugAddr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics of %s: %s", debugAddr, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		name := f[0]
		if i := strings.IndexByte(name, '{'); i >= 0 {
			name = name[:i]
			// Label values may hold spaces: the value is the field after "}".
			if j := strings.LastIndexByte(line, '}'); j >= 0 {
				f = strings.Fields(line[j+1:])
				if len(f) == 0 {
					continue
				}
				f = append([]string{name}, f...)
			}
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("read /metrics of %s: %v", debugAddr, err)
	}
	return out
}

// durEventually polls cond every 50ms until it holds, for up to timeout; then
// the test fails with what and cond's last detail. Only the absence of the
// condition after a generous bound fails a test, never a duration.
func durEventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s: %s", what, timeout, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// durFilesContaining lists the files under dir whose content contains one of
// needles (as "path: what").
func durFilesContaining(t testing.TB, dir string, needles map[string]string) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for what, n := range needles {
			if strings.Contains(string(b), n) {
				hits = append(hits, p+": "+what)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	sort.Strings(hits)
	return hits
}
