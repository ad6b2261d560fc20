package check

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

const (
	obsDir       = "../observability"
	rulesFile    = "../observability/rules/hangar.rules.yml"
	rulesTestDir = "../observability/tests" // not in rules/: the compose stack loads rules/*.yml
	rulesTest    = "hangar.rules.test.yml"
	dashboardDir = "../observability/dashboards"
	repoRoot     = "../.."
)

// lazyMetrics are metric vectors that the services register but create no
// series of until the first observation, so a scrape of a healthy stack does
// not show them. Each is checked against its registration in the source
// instead, and must really be absent from the scrape: once its service
// pre-creates the series (WithLabelValues at start), remove it from here.
var lazyMetrics = map[string]string{}

func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found in PATH: apt-get install prometheus (Debian's package ships promtool)")
	}
	return p
}

func runPromtool(t *testing.T, dir string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("promtool %s:\n%s", strings.Join(args, " "), out)
}

// TestRulesCheck runs `promtool check rules` on the alert rules.
func TestRulesCheck(t *testing.T) {
	abs, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	runPromtool(t, ".", "check", "rules", abs)
}

// TestRulesUnit runs the rules' unit tests (promtool test rules).
func TestRulesUnit(t *testing.T) {
	runPromtool(t, rulesTestDir, "test", "rules", rulesTest)
}

type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Record      string            `json:"record"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readRules(t *testing.T) *ruleFile {
	t.Helper()
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(data, &rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	return &rf
}

// TestRulesAnnotations: every alert has a severity, a summary, a description
// and a runbook hint pointing at a section of deploy/observability/README.md.
func TestRulesAnnotations(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(obsDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if r.Labels["severity"] == "" {
				t.Errorf("%s: no severity label", r.Alert)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					t.Errorf("%s: no %s annotation", r.Alert, a)
				}
			}
			anchor := regexp.MustCompile(`README\.md#([a-z0-9-]+)`).FindStringSubmatch(r.Annotations["runbook"])
			if anchor == nil {
				t.Errorf("%s: the runbook hint names no README.md#section", r.Alert)
				continue
			}
			if !bytes.Contains(readme, []byte(`<a id="`+anchor[1]+`"></a>`)) {
				t.Errorf("%s: README.md has no runbook section %q", r.Alert, anchor[1])
			}
		}
	}
	if n == 0 {
		t.Fatal("no alerts")
	}
}

// dashboardQueries returns the PromQL of every target and templating query of
// a dashboard file.
func dashboardQueries(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
					out = append(out, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(doc)
	return out
}

func dashboardFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dashboardDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"hangar-overview.json", "hangar-logs.json"} {
		if !slices.Contains(files, filepath.Join(dashboardDir, want)) {
			t.Errorf("dashboard %s is missing", want)
		}
	}
	return files
}

type dashboard struct {
	UID    string `json:"uid"`
	Title  string `json:"title"`
	Panels []struct {
		ID      int    `json:"id"`
		Type    string `json:"type"`
		Title   string `json:"title"`
		Targets []struct {
			Expr  string `json:"expr"`
			RefID string `json:"refId"`
		} `json:"targets"`
	} `json:"panels"`
}

// TestDashboards: each dashboard has a uid and a title, unique panel ids, a
// query in every non-row panel, and every query parses as PromQL (promtool
// checks them as recording rules once Grafana's variables are substituted).
func TestDashboards(t *testing.T) {
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboards\n    rules:\n")
	n := 0
	for _, f := range dashboardFiles(t) {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(data, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid and title are required", f)
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			if ids[p.ID] {
				t.Errorf("%s: panel id %d twice", f, p.ID)
			}
			ids[p.ID] = true
			if p.Type != "row" && len(p.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, p.Title)
			}
		}
		for _, q := range dashboardQueries(t, f) {
			if strings.HasPrefix(q, "label_values(") {
				q = strings.TrimSuffix(strings.TrimPrefix(q, "label_values("), ")")
				q = q[:strings.LastIndex(q, ",")]
			}
			q = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h", "$namespace", ".*").Replace(q)
			n++
			fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", n, strings.ReplaceAll(mustJSON(t, q), "\n", " "))
		}
	}
	tmp := filepath.Join(t.TempDir(), "dashboards.rules.yml")
	if err := os.WriteFile(tmp, []byte(rules.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	runPromtool(t, ".", "check", "rules", tmp)
}

func mustJSON(t *testing.T, s string) string {
	t.Helper()
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var metricName = regexp.MustCompile(`\bhangar_[a-zA-Z0-9_]+`)

// referencedMetrics returns every hangar_* metric name used by the rules'
// and the dashboards' PromQL, with where it is used.
func referencedMetrics(t *testing.T) map[string][]string {
	t.Helper()
	refs := map[string][]string{}
	for _, g := range readRules(t).Groups {
		for _, r := range g.Rules {
			for _, m := range metricName.FindAllString(r.Expr, -1) {
				refs[m] = append(refs[m], "rule "+r.Alert+r.Record)
			}
		}
	}
	for _, f := range dashboardFiles(t) {
		for _, q := range dashboardQueries(t, f) {
			for _, m := range metricName.FindAllString(q, -1) {
				refs[m] = append(refs[m], filepath.Base(f))
			}
		}
	}
	if len(refs) == 0 {
		t.Fatal("no hangar_* metric referenced")
	}
	return refs
}

// baseName strips the series suffixes of histograms and summaries.
func baseName(m string) string {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if b, ok := strings.CutSuffix(m, s); ok {
			return b
		}
	}
	return m
}

// TestREADMEListsMetrics: deploy/observability/README.md lists every metric
// the rules and dashboards use.
func TestREADMEListsMetrics(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(obsDir, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for m := range referencedMetrics(t) {
		if !bytes.Contains(readme, []byte("`"+baseName(m)+"`")) {
			t.Errorf("README.md does not list `%s`", baseName(m))
		}
	}
}

// devStack builds hangarctl, starts `hangarctl dev --keep --runtime process`
// and returns the metrics URLs it prints once its demo run has finished. The
// stack is interrupted (SIGINT) when the test ends.
func devStack(t *testing.T) []string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hangarctl")
	src, err := filepath.Abs(filepath.Join(repoRoot, "cmd", "hangarctl"))
	if err != nil {
		t.Fatal(err)
	}
	buildCtx, cancelBuild := context.WithTimeout(t.Context(), 8*time.Minute)
	defer cancelBuild()
	b := exec.CommandContext(buildCtx, "go", "build", "-o", bin, ".")
	b.Dir = src
	b.Env = append(os.Environ(), "GOWORK=off")
	if out, err := b.CombinedOutput(); err != nil {
		t.Fatalf("go build hangarctl: %v\n%s", err, out)
	}

	dir := t.TempDir()
	cmd := exec.Command(bin, "dev", "--keep", "--dir", dir, "--runtime", "process")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Errorf("hangarctl dev did not stop within 30s of SIGINT; killing it")
			_ = cmd.Process.Kill()
			<-done
		}
	})

	var mu sync.Mutex
	var seen strings.Builder
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			mu.Lock()
			seen.WriteString(line + "\n")
			mu.Unlock()
			if strings.HasPrefix(line, "Metrics: ") {
				select {
				case found <- line:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
	}()
	output := func() string {
		mu.Lock()
		defer mu.Unlock()
		return seen.String() + stderr.String()
	}
	select {
	case line := <-found:
		urls := regexp.MustCompile(`http://[^\s,]+/metrics`).FindAllString(line, -1)
		// gateway, logship, policy, then one per executor
		if len(urls) < 4 {
			t.Fatalf("cannot parse the metrics line %q", line)
		}
		return urls
	case <-done:
		t.Fatalf("hangarctl dev exited before printing its metrics (%v):\n%s", waitErr, output())
	case <-time.After(4 * time.Minute):
		t.Fatalf("hangarctl dev printed no metrics line within 4 minutes:\n%s", output())
	}
	return nil
}

// scrapeFamilies returns the metric families of a /metrics page, by name,
// with their type.
func scrapeFamilies(t *testing.T, url string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	fams := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			fams[f[2]] = f[3]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	if len(fams) == 0 {
		t.Fatalf("scrape %s: no metric families", url)
	}
	return fams
}

// declaredInSource reports whether a metric is registered by name in the Go
// sources (tests excluded) of the services or the platform module.
func declaredInSource(t *testing.T, name, file string) bool {
	t.Helper()
	re := regexp.MustCompile(`Name:\s*"` + regexp.QuoteMeta(name) + `"`)
	data, err := os.ReadFile(filepath.Join(repoRoot, file))
	if err != nil {
		t.Errorf("%s: %v", file, err)
		return false
	}
	return re.Match(data)
}

// TestMetricsExported starts the real services (hangarctl dev, process
// runtime), scrapes every /metrics after the demo run, and checks that every
// hangar_* metric the rules and dashboards use is exported by some service.
func TestMetricsExported(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole dev stack")
	}
	refs := referencedMetrics(t)
	urls := devStack(t)
	exported := map[string]string{}
	for _, u := range urls {
		for name, typ := range scrapeFamilies(t, u) {
			exported[name] = typ
		}
	}
	exports := func(m string) bool {
		if _, ok := exported[m]; ok {
			return true
		}
		typ, ok := exported[baseName(m)]
		return ok && baseName(m) != m && (typ == "histogram" || typ == "summary")
	}
	names := make([]string, 0, len(refs))
	for m := range refs {
		names = append(names, m)
	}
	slices.Sort(names)
	for _, m := range names {
		if file, lazy := lazyMetrics[baseName(m)]; lazy {
			if exports(m) {
				t.Errorf("%s is exported now: remove it from lazyMetrics", m)
			}
			if !declaredInSource(t, baseName(m), file) {
				t.Errorf("%s (used by %s) is not registered in %s", m, strings.Join(slices.Compact(refs[m]), ", "), file)
			}
			continue
		}
		if !exports(m) {
			t.Errorf("%s (used by %s) is exported by no service", m, strings.Join(slices.Compact(refs[m]), ", "))
		}
	}
	t.Logf("%d referenced metrics checked against %d scraped families from %d endpoints", len(names), len(exported), len(urls))
}
