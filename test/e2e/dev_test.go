package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/test/e2e/harness"
)

// TestDevInDocker is issue 11's "hangarctl dev with the host's busybox hidden
// runs the demo in a container": the README's main command, with a PATH
// holding nothing but the Go toolchain and HANGAR_DEV_BUSYBOX=off (no busybox
// lookup), runs the demo on the Docker runtime in hangar/demo-runner:latest,
// an image built from hangar-sh, and the engine saw the run's container start
// from that image.
func TestDevInDocker(t *testing.T) {
	harness.RequireDocker(t)
	ctl := bins.Path(t, "hangarctl")
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal("go is required by this test (hangarctl dev builds hangar-sh with it)")
	}
	onlyGo := t.TempDir()
	if err := os.Symlink(goBin, filepath.Join(onlyGo, "go")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "dev")
	since := time.Now().Add(-time.Second)
	// From the repository root, as the README says: dev finds hangarctl's
	// source there to build hangar-sh.
	r := harness.RunIn(t, bins.Root(), 10*time.Minute, []string{"PATH=" + onlyGo, "HANGAR_DEV_BUSYBOX=off"}, ctl, "dev", "--dir", dir)
	if r.Code != 0 {
		t.Fatalf("hangarctl dev: %s", r)
	}
	for _, want := range []string{
		"executor runtime: docker (the Docker engine is reachable)",
		"runner image hangar/demo-runner:latest ready, built locally from the project's own static shell (hangar-sh",
		"calling the API with ******",
		"the secret is masked",
	} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("hangarctl dev's output lacks %q:\n%s", want, r)
		}
	}
	if strings.Contains(r.Stdout, "process runtime") {
		t.Errorf("hangarctl dev fell back to the process runtime:\n%s", r)
	}
	m := regexp.MustCompile(`run (run-[0-9a-f]+) submitted`).FindStringSubmatch(r.Stdout)
	if m == nil {
		t.Fatalf("hangarctl dev does not name its run:\n%s", r)
	}
	runID := m[1]
	// The engine's own record: a container of the run started from the image.
	starts := harness.MustDocker(t, "events", "--since", since.Format(time.RFC3339), "--until", time.Now().Add(time.Second).Format(time.RFC3339),
		"--filter", "type=container", "--filter", "event=start", "--filter", "label=hangar.run-id="+runID,
		"--format", "{{.Actor.Attributes.image}}")
	if !strings.Contains(starts, "hangar/demo-runner:latest") {
		t.Errorf("docker events: no container of run %s started from hangar/demo-runner:latest (saw %q)", runID, starts)
	}
	if c := harness.MustDocker(t, "image", "inspect", "--format", "{{.Comment}}", "hangar/demo-runner:latest"); !strings.Contains(c, "hangar shell") {
		t.Errorf("hangar/demo-runner:latest's comment is %q: not the hangar shell image", c)
	}

	// The waterfall dev draws, and `hangarctl trace` draws again from the
	// OTLP JSON file it kept, name every service of the pool.
	t.Run("waterfall names the four services", func(t *testing.T) {
		tr := harness.Run(t, time.Minute, nil, ctl, "trace", "--dir", dir, runID)
		if tr.Code != 0 {
			t.Fatalf("hangarctl trace: %s", tr)
		}
		for _, out := range []struct{ what, text string }{{"hangarctl dev", r.Stdout}, {"hangarctl trace", tr.Stdout}} {
			for _, svc := range []string{"hangar-gateway", "hangar-policy", "hangar-executor", "hangar-logship"} {
				if !regexp.MustCompile(`(?m)^` + svc + ` +\S`).MatchString(out.text) {
					t.Errorf("%s's waterfall has no span line of %s:\n%s", out.what, svc, out.text)
				}
			}
		}
		raw, err := os.ReadFile(filepath.Join(dir, "traces", runID+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var otlp struct {
			ResourceSpans []struct {
				ScopeSpans []struct {
					Spans []struct {
						TraceID string `json:"traceId"`
						SpanID  string `json:"spanId"`
					} `json:"spans"`
				} `json:"scopeSpans"`
			} `json:"resourceSpans"`
		}
		if err := json.Unmarshal(raw, &otlp); err != nil {
			t.Fatalf("%s/traces/%s.json is not JSON: %v", dir, runID, err)
		}
		n := 0
		hexID := regexp.MustCompile(`^[0-9a-f]{32}$`)
		for _, rs := range otlp.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				for _, sp := range ss.Spans {
					n++
					if !hexID.MatchString(sp.TraceID) || len(sp.SpanID) != 16 {
						t.Errorf("span ids %q/%q are not OTLP JSON's hex", sp.TraceID, sp.SpanID)
					}
				}
			}
		}
		if n < 4 {
			t.Errorf("the kept trace has %d spans", n)
		}
	})
}

// TestDevHandOff: on the dev stack (hangarctl dev --keep) a tracked run with
// needs_confirmation stops after its plan (run submit exits 3), `run
// confirm` resumes it, and the apply, on the workspace the plan left, is
// stored as the log of RUN-resumed: dev's executors have the state bucket.
func TestDevHandOff(t *testing.T) {
	harness.RequireDocker(t)
	ctl := bins.Path(t, "hangarctl")
	dir := filepath.Join(t.TempDir(), "dev")
	dev := harness.Start(t, "dev-keep", nil, ctl, "dev", "--keep", "--dir", dir)
	keep := regexp.MustCompile(`hangarctl run submit --dir (\S+) --pool (\S+) --spec \S+ --follow --logship (\S+) \\\s+--tls-ca (\S+) --tls-cert (\S+) --tls-key (\S+)`)
	dev.WaitOutput(keep, 10*time.Minute)
	m := keep.FindStringSubmatch(dev.Output())
	cp, pool, logship, ca, cert, key := m[1], m[2], m[3], m[4], m[5], m[6]

	spec := harness.WriteFile(t, t.TempDir(), "tracked.json", `{
  "type": "RUN_TYPE_TRACKED",
  "stack": {"id": "stack-handoff", "name": "handoff"},
  "commit": {"sha": "0000000000000000000000000000000000000000", "branch": "main", "message": "e2e", "author": "hangar-e2e"},
  "runner_image": "hangar/demo-runner:latest",
  "needs_confirmation": true,
  "phases": [
    {"name": "init", "commands": ["echo init-ran"]},
    {"name": "plan", "commands": ["echo the-plan > plan.txt", "echo plan-ran"]},
    {"name": "apply", "commands": ["cat plan.txt", "echo apply-ran"]}
  ]
}`)
	sub := harness.Run(t, 5*time.Minute, nil, ctl, "run", "submit", "--dir", dir, "--pool", pool, "--spec", spec, "--follow",
		"--logship", logship, "--tls-ca", ca, "--tls-cert", cert, "--tls-key", key, "--timeout", "4m")
	if sub.Code != 3 || !strings.Contains(sub.Stdout, "unconfirmed") {
		t.Fatalf("run submit of a tracked run with needs_confirmation: want exit 3 (waits for confirmation):\n%s", sub)
	}
	runID := regexp.MustCompile(`run (run-[0-9a-f]+) submitted`).FindStringSubmatch(sub.Stdout)[1]
	if conf := harness.Run(t, 3*time.Minute, nil, ctl, "run", "confirm", "--dir", cp, "--pool", pool, runID); conf.Code != 0 {
		t.Fatalf("run confirm %s: %s", runID, conf)
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		logs := harness.Run(t, time.Minute, nil, ctl, "logs", "--dir", dir, runID+"-resumed")
		if logs.Code == 0 && strings.Contains(logs.Stdout, "the-plan") && strings.Contains(logs.Stdout, "apply-ran") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no stored apply log of %s-resumed with the plan's file:\n%s\n--- dev:\n%s", runID, logs, dev.Output())
		}
		time.Sleep(2 * time.Second)
	}
}
