package workspace

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
)

const secret = "s3cr3t-t0ken"

// gitCmd runs git in dir with a fixed identity and returns its trimmed output.
func gitCmd(t *testing.T, dir string, args ...string) string {
	t.Helper()
	args = append([]string{"-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"}, args...)
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// repo is a bare repository served over smart HTTP by git http-backend.
type repo struct {
	url         string // http://127.0.0.1:PORT
	first, last string // commits on main: VERSION 1 (tagged v1) and VERSION 2
	feature     string // the head of branch "feature"

	mu    sync.Mutex
	paths []string // request paths seen
}

func (r *repo) sawPath(prefix string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.paths {
		if strings.HasPrefix(p, prefix) {
			return true
		}
	}
	return false
}

// serveRepo builds acme/infra.git and serves it on loopback. With user set,
// every request needs that user and password.
func serveRepo(t *testing.T, user, password string) *repo {
	t.Helper()
	// Keep the machine's git configuration out of the tests.
	t.Setenv("GIT_CONFIG_GLOBAL", os.DevNull)
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")

	src := t.TempDir()
	gitCmd(t, src, "init", "-q")
	writeFile(t, filepath.Join(src, "VERSION"), "1\n")
	writeFile(t, filepath.Join(src, "infra", "prod", "main.tf"), "# prod\n")
	writeFile(t, filepath.Join(src, "README"), "not a directory\n")
	if err := os.Symlink("/", filepath.Join(src, "escape")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("infra", filepath.Join(src, "inside")); err != nil {
		t.Fatal(err)
	}
	gitCmd(t, src, "add", "-A")
	gitCmd(t, src, "commit", "-q", "-m", "one")
	gitCmd(t, src, "tag", "v1")
	r := &repo{first: gitCmd(t, src, "rev-parse", "HEAD")}
	gitCmd(t, src, "checkout", "-q", "-b", "feature")
	writeFile(t, filepath.Join(src, "VERSION"), "feature\n")
	gitCmd(t, src, "commit", "-q", "-am", "feature")
	r.feature = gitCmd(t, src, "rev-parse", "HEAD")
	gitCmd(t, src, "checkout", "-q", "main")
	writeFile(t, filepath.Join(src, "VERSION"), "2\n")
	gitCmd(t, src, "commit", "-q", "-am", "two")
	r.last = gitCmd(t, src, "rev-parse", "HEAD")

	root := t.TempDir()
	gitCmd(t, root, "clone", "-q", "--bare", src, filepath.Join(root, "acme", "infra.git"))

	backend := &cgi.Handler{
		Path:   filepath.Join(gitCmd(t, root, "--exec-path"), "git-http-backend"),
		Root:   "/",
		Env:    []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
		Stderr: io.Discard,
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.paths = append(r.paths, req.URL.Path)
		r.mu.Unlock()
		if user != "" {
			u, p, ok := req.BasicAuth()
			if !ok || u != user || p != password {
				w.Header().Set("WWW-Authenticate", `Basic realm="git"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		backend.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// syncBuffer collects progress output written from two goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func readVersion(t *testing.T, ws *Workspace) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ws.Dir, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestPrepareClonesFromPrivateVCS(t *testing.T) {
	r := serveRepo(t, "", "")
	tests := []struct {
		name        string
		ref         string
		wantVersion string
		wantCommit  string
		wantDepth   string // commits in the clone's history
	}{
		{"default branch", "", "2", r.last, "1"},
		{"branch", "main", "2", r.last, "1"},
		{"full branch ref", "refs/heads/feature", "feature", r.feature, "1"},
		{"other branch", "feature", "feature", r.feature, "1"},
		{"tag", "v1", "1", r.first, "1"},
		{"commit", r.first, "1", r.first, "1"},
		{"abbreviated commit", r.first[:10], "1", r.first, "1"},
		{"commit on a branch", r.feature, "feature", r.feature, "2"},
		{"latest commit keeps the history", r.last, "2", r.last, "2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			stdout, stderr := &syncBuffer{}, &syncBuffer{}
			spec := &runv1.RunSpec{Source: &runv1.Source{
				Url: "https://vcs-internal/acme/infra.git", Ref: tt.ref, ProjectRoot: "infra/prod",
			}}
			ws, err := Prepare(testContext(t), spec, Options{
				BaseDir:     base,
				VCSMappings: map[string]string{"vcs-internal": r.url},
				Stdout:      stdout,
				Stderr:      stderr,
			})
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			if filepath.Dir(ws.Dir) != base {
				t.Errorf("Dir %q is not under the base dir %q", ws.Dir, base)
			}
			if want := filepath.Join(ws.Dir, "infra", "prod"); ws.Root != want {
				t.Errorf("Root = %q, want %q", ws.Root, want)
			}
			if got := readVersion(t, ws); got != tt.wantVersion {
				t.Errorf("VERSION = %q, want %q", got, tt.wantVersion)
			}
			if ws.Commit != tt.wantCommit {
				t.Errorf("Commit = %q, want %q", ws.Commit, tt.wantCommit)
			}
			if got := gitCmd(t, ws.Dir, "rev-list", "--count", "HEAD"); got != tt.wantDepth {
				t.Errorf("history has %s commits, want %s", got, tt.wantDepth)
			}
			if !r.sawPath("/acme/infra.git/") {
				t.Errorf("the server saw no request for the mapped path: %q", r.paths)
			}
			if out := stdout.String(); !strings.Contains(out, "Fetching "+r.url+"/acme/infra.git") || !strings.Contains(out, "HEAD is now at "+tt.wantCommit) {
				t.Errorf("progress output = %q", out)
			}
			// The run's log never shows where the executor keeps its files.
			if all := stdout.String() + stderr.String(); strings.Contains(all, base) || !strings.Contains(all, "Cloning into '<workspace>'") {
				t.Errorf("progress output shows the host path %s, or not <workspace>:\n%s", base, all)
			}
			if err := ws.Remove(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(ws.Dir); !os.IsNotExist(err) {
				t.Errorf("workspace still there after Remove: %v", err)
			}
		})
	}
}

func TestPrepareCredentials(t *testing.T) {
	r := serveRepo(t, "alice", secret)
	opts := func(stdout, stderr *syncBuffer) Options {
		return Options{
			BaseDir:     t.TempDir(),
			VCSMappings: map[string]string{"VCS-Internal": r.url},
			Stdout:      stdout,
			Stderr:      stderr,
		}
	}

	t.Run("right password", func(t *testing.T) {
		stdout, stderr := &syncBuffer{}, &syncBuffer{}
		spec := &runv1.RunSpec{Source: &runv1.Source{Url: "https://alice:" + secret + "@vcs-internal/acme/infra.git", Ref: "main"}}
		ws, err := Prepare(testContext(t), spec, opts(stdout, stderr))
		if err != nil {
			t.Fatalf("Prepare: %v", err)
		}
		defer ws.Remove()
		config, err := os.ReadFile(filepath.Join(ws.Dir, ".git", "config"))
		if err != nil {
			t.Fatal(err)
		}
		for what, text := range map[string]string{".git/config": string(config), "stdout": stdout.String(), "stderr": stderr.String()} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds the password: %q", what, text)
			}
		}
		want := "Fetching " + strings.Replace(r.url, "://", "://***@", 1) + "/acme/infra.git (private VCS vcs-internal) at main\n"
		if !strings.HasPrefix(stdout.String(), want) {
			t.Errorf("stdout does not name the redacted source: %q", stdout.String())
		}
	})

	tests := []struct {
		name    string
		url     string
		wantErr string
	}{
		{"wrong password", "https://alice:wrong-" + secret + "@vcs-internal/acme/infra.git", "none or wrong ones in the source URL"},
		// Without credentials git would ask for a user name: it must fail instead.
		{"no credentials", "https://vcs-internal/acme/infra.git", "could not read Username"},
		{"unreachable", "https://alice:" + secret + "@127.0.0.1:1/acme/infra.git", "127.0.0.1:1"},
		{"unreachable private VCS", "https://alice:" + secret + "@offline-vcs/acme/infra.git", "offline-vcs"},
		{"unknown repository", "https://alice:" + secret + "@vcs-internal/acme/missing.git", "not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr := &syncBuffer{}, &syncBuffer{}
			o := opts(stdout, stderr)
			o.VCSMappings["offline-vcs"] = "http://127.0.0.1:1"
			spec := &runv1.RunSpec{Source: &runv1.Source{Url: tt.url}}
			ws, err := Prepare(testContext(t), spec, o)
			if err == nil {
				ws.Remove()
				t.Fatal("Prepare succeeded")
			}
			t.Logf("error: %v", err)
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantErr)
			}
			for what, text := range map[string]string{"error": err.Error(), "stdout": stdout.String(), "stderr": stderr.String()} {
				if strings.Contains(text, secret) {
					t.Errorf("%s holds the password: %q", what, text)
				}
			}
			if entries, _ := os.ReadDir(o.BaseDir); len(entries) > 0 {
				t.Errorf("Prepare left %d entries in the base dir", len(entries))
			}
		})
	}
}

func TestPrepareProjectRoot(t *testing.T) {
	r := serveRepo(t, "", "")
	tests := []struct {
		name     string
		url      string
		root     string
		wantRoot string // relative to Dir; "" when Prepare must fail
		wantErr  string
	}{
		{"empty source", "", "", ".", ""},
		{"empty source with a project root", "", "a/b", "a/b", ""},
		{"repository root", r.url + "/acme/infra.git", "", ".", ""},
		{"symbolic link inside the repository", r.url + "/acme/infra.git", "inside/prod", "inside/prod", ""},
		{"parent directory", r.url + "/acme/infra.git", "../x", "", `project_root "../x" is not a path inside the repository`},
		{"parent directory, empty source", "", "a/../../x", "", "is not a path inside the repository"},
		{"absolute", r.url + "/acme/infra.git", "/etc", "", "is not a path inside the repository"},
		{"symbolic link out of the workspace", r.url + "/acme/infra.git", "escape", "", "leads outside the workspace"},
		{"missing", r.url + "/acme/infra.git", "infra/staging", "", `project root "infra/staging" not found in the source`},
		{"a file", r.url + "/acme/infra.git", "README", "", "is not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			spec := &runv1.RunSpec{Source: &runv1.Source{Url: tt.url, ProjectRoot: tt.root}}
			ws, err := Prepare(testContext(t), spec, Options{BaseDir: base})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("error = %v, want one containing %q", err, tt.wantErr)
				}
				if entries, _ := os.ReadDir(base); len(entries) > 0 {
					t.Errorf("Prepare left %d entries in the base dir", len(entries))
				}
				return
			}
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			defer ws.Remove()
			if want := filepath.Join(ws.Dir, filepath.FromSlash(tt.wantRoot)); ws.Root != want {
				t.Errorf("Root = %q, want %q", ws.Root, want)
			}
			if fi, err := os.Stat(ws.Root); err != nil || !fi.IsDir() {
				t.Errorf("Root is not a directory: %v", err)
			}
		})
	}
}

func TestPrepareRefusesSources(t *testing.T) {
	local := t.TempDir()
	tests := []struct {
		name    string
		url     string
		ref     string
		wantErr string
	}{
		{"local path", local, "", "not a http, https, ssh or git URL"},
		{"file URL", "file://" + local, "", `scheme "file" is not allowed`},
		{"ext transport", "ext::sh -c touch% " + filepath.Join(local, "pwned"), "", "not a http, https, ssh or git URL"},
		{"option as URL", "--upload-pack=touch /tmp/pwned", "", "not a http, https, ssh or git URL"},
		{"option as ref", "https://127.0.0.1:1/x.git", "--upload-pack=touch", "is not a branch, tag or commit"},
		{"bad URL with a password", "https://alice:" + secret + "@host:port/x.git", "", "source url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			spec := &runv1.RunSpec{Source: &runv1.Source{Url: tt.url, Ref: tt.ref}}
			_, err := Prepare(testContext(t), spec, Options{BaseDir: base})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("error holds the password: %v", err)
			}
			if _, err := os.Stat(filepath.Join(local, "pwned")); err == nil {
				t.Error("the ext transport ran a command")
			}
		})
	}
}

func TestPrepareCancelled(t *testing.T) {
	r := serveRepo(t, "", "")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	base := t.TempDir()
	spec := &runv1.RunSpec{Source: &runv1.Source{Url: r.url + "/acme/infra.git"}}
	if _, err := Prepare(ctx, spec, Options{BaseDir: base}); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("error = %v, want the cancellation", err)
	}
	if entries, _ := os.ReadDir(base); len(entries) > 0 {
		t.Errorf("Prepare left %d entries in the base dir", len(entries))
	}
}

func TestRemoveReadOnly(t *testing.T) {
	ws, err := Prepare(testContext(t), &runv1.RunSpec{}, Options{BaseDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	locked := filepath.Join(ws.Dir, "locked")
	writeFile(t, filepath.Join(locked, "state"), "x")
	if err := os.Chmod(locked, 0o500); err != nil {
		t.Fatal(err)
	}
	if err := ws.Remove(); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := os.Stat(ws.Dir); !os.IsNotExist(err) {
		t.Errorf("workspace still there: %v", err)
	}
}

func TestResolveURL(t *testing.T) {
	mappings := map[string]string{"vcs-internal": "http://10.0.0.5:8080/git", "Other": "https://other.example"}
	tests := []struct {
		name      string
		url       string
		wantClone string
		wantShown string
		wantUser  string
		wantPass  string
	}{
		{"public", "https://github.com/acme/infra.git", "https://github.com/acme/infra.git", "https://github.com/acme/infra.git", "", ""},
		{"mapped with a base path", "https://vcs-internal/acme/infra.git", "http://10.0.0.5:8080/git/acme/infra.git", "http://10.0.0.5:8080/git/acme/infra.git", "", ""},
		{"mapped, name in other case", "https://other/acme/infra.git", "https://other.example/acme/infra.git", "https://other.example/acme/infra.git", "", ""},
		{"host with a port is not the name", "https://vcs-internal:8443/acme/infra.git", "https://vcs-internal:8443/acme/infra.git", "https://vcs-internal:8443/acme/infra.git", "", ""},
		{"credentials moved out of the URL", "https://alice:" + secret + "@vcs-internal/acme/infra.git", "http://10.0.0.5:8080/git/acme/infra.git", "http://***@10.0.0.5:8080/git/acme/infra.git", "alice", secret},
		{"token as user", "https://" + secret + "@github.com/a/b.git", "https://github.com/a/b.git", "https://***@github.com/a/b.git", secret, ""},
		{"ssh", "ssh://git@github.com/acme/infra.git", "ssh://git@github.com/acme/infra.git", "ssh://***@github.com/acme/infra.git", "", ""},
		{"scp-like", "git@github.com:acme/infra.git", "git@github.com:acme/infra.git", "git@github.com:acme/infra.git", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := resolveURL(tt.url, mappings)
			if err != nil {
				t.Fatal(err)
			}
			if s.clone != tt.wantClone || s.shown != tt.wantShown || s.user != tt.wantUser || s.password != tt.wantPass {
				t.Errorf("resolveURL = %+v, want clone %q shown %q user %q", s, tt.wantClone, tt.wantShown, tt.wantUser)
			}
		})
	}
}

func TestParseVCSMappings(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    map[string]string
		wantErr string
	}{
		{
			name: "none",
			env:  map[string]string{"PATH": "/bin", "HANGAR_RUN_TIMEOUT": "70m"},
			want: map[string]string{},
		},
		{
			name: "pairs with any suffix",
			env: map[string]string{
				"HANGAR_PRIVATEVCS_MAPPING_NAME_1":               "vcs-internal",
				"HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1":      "http://127.0.0.1:8080/",
				"HANGAR_PRIVATEVCS_MAPPING_NAME_gitlab":          "gitlab-private",
				"HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_gitlab": "https://gitlab.corp.example/git",
			},
			want: map[string]string{"vcs-internal": "http://127.0.0.1:8080", "gitlab-private": "https://gitlab.corp.example/git"},
		},
		{
			name:    "name without endpoint",
			env:     map[string]string{"HANGAR_PRIVATEVCS_MAPPING_NAME_2": "vcs"},
			wantErr: "HANGAR_PRIVATEVCS_MAPPING_NAME_2: no matching HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_2",
		},
		{
			name:    "endpoint without name",
			env:     map[string]string{"HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_3": "http://x"},
			wantErr: "HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_3: no matching HANGAR_PRIVATEVCS_MAPPING_NAME_3",
		},
		{
			name: "endpoint not http",
			env: map[string]string{
				"HANGAR_PRIVATEVCS_MAPPING_NAME_1":          "vcs",
				"HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1": "ftp://vcs.example",
			},
			wantErr: "HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1: base endpoint \"ftp://vcs.example\" must be an http or https URL",
		},
		{
			name: "endpoint not a URL",
			env: map[string]string{
				"HANGAR_PRIVATEVCS_MAPPING_NAME_1":          "vcs",
				"HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1": "vcs.example:8080",
			},
			wantErr: "HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1:",
		},
		{
			name: "endpoint without host",
			env: map[string]string{
				"HANGAR_PRIVATEVCS_MAPPING_NAME_1":          "vcs",
				"HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1": "http:///path",
			},
			wantErr: "HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1: base endpoint \"http:///path\" has no host",
		},
		{
			name: "empty name",
			env: map[string]string{
				"HANGAR_PRIVATEVCS_MAPPING_NAME_1":          "",
				"HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1": "http://x",
			},
			wantErr: "HANGAR_PRIVATEVCS_MAPPING_NAME_1: empty name",
		},
		{
			name: "duplicate name",
			env: map[string]string{
				"HANGAR_PRIVATEVCS_MAPPING_NAME_1":          "vcs",
				"HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1": "http://a",
				"HANGAR_PRIVATEVCS_MAPPING_NAME_2":          "VCS",
				"HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_2": "http://b",
			},
			wantErr: "HANGAR_PRIVATEVCS_MAPPING_NAME_2: name \"VCS\" is already mapped by HANGAR_PRIVATEVCS_MAPPING_NAME_1",
		},
		{
			name:    "no suffix",
			env:     map[string]string{"HANGAR_PRIVATEVCS_MAPPING_NAME_": "vcs"},
			wantErr: "HANGAR_PRIVATEVCS_MAPPING_NAME_: the variable needs a suffix",
		},
		{
			name: "password in the endpoint stays out of errors",
			env: map[string]string{
				"HANGAR_PRIVATEVCS_MAPPING_NAME_1":          "vcs",
				"HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_1": "ftp://u:" + secret + "@vcs.example",
			},
			wantErr: "ftp://***@vcs.example",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseVCSMappings(tt.env)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error holds the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("mappings = %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("mappings[%q] = %q, want %q", k, got[k], v)
				}
			}
		})
	}
}

func TestRedaction(t *testing.T) {
	tests := []struct{ in, want string }{
		{"fatal: unable to access 'https://alice:pw@host/x.git/': 401", "fatal: unable to access 'https://***@host/x.git/': 401"},
		{"ssh://git@host/x and http://t@h/y", "ssh://***@host/x and http://***@h/y"},
		{"https://host/path@not-userinfo", "https://host/path@not-userinfo"},
		{"no url here", "no url here"},
	}
	for _, tt := range tests {
		if got := redactURL(tt.in); got != tt.want {
			t.Errorf("redactURL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}

	// A secret split across writes is still removed: only whole lines pass.
	var out bytes.Buffer
	l := &lineRedactor{w: &out, secrets: []string{secret}}
	for _, chunk := range []string{"token " + secret[:4], secret[4:] + " end\rnext ", "line\n", "tail " + secret} {
		_, _ = l.Write([]byte(chunk))
	}
	l.flush()
	if want := "token *** end\rnext line\ntail ***"; out.String() != want {
		t.Errorf("redacted output = %q, want %q", out.String(), want)
	}
}

func TestPrepareTokenAsUser(t *testing.T) {
	r := serveRepo(t, secret, "")
	stdout, stderr := &syncBuffer{}, &syncBuffer{}
	spec := &runv1.RunSpec{Source: &runv1.Source{Url: strings.Replace(r.url, "://", "://"+secret+"@", 1) + "/acme/infra.git"}}
	ws, err := Prepare(testContext(t), spec, Options{BaseDir: t.TempDir(), Stdout: stdout, Stderr: stderr})
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	defer ws.Remove()
	config, err := os.ReadFile(filepath.Join(ws.Dir, ".git", "config"))
	if err != nil {
		t.Fatal(err)
	}
	for what, text := range map[string]string{".git/config": string(config), "stdout": stdout.String(), "stderr": stderr.String()} {
		if strings.Contains(text, secret) {
			t.Errorf("%s holds the token: %q", what, text)
		}
	}
}

func TestRemoveStaleTakesOnlyTheOwnersWorkspaces(t *testing.T) {
	base := t.TempDir()
	spec := &runv1.RunSpec{}
	mine, err := Prepare(context.Background(), spec, Options{BaseDir: base, Owner: "exec/1"})
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(mine.Dir, "f"), []byte("x"), 0o400)
	os.Chmod(mine.Dir, 0o500) // a run may leave it read-only
	other, err := Prepare(context.Background(), spec, Options{BaseDir: base, Owner: "exec-2"})
	if err != nil {
		t.Fatal(err)
	}
	removed, err := RemoveStale(base, "exec/1")
	if err != nil || len(removed) != 1 || removed[0] != mine.Dir {
		t.Fatalf("removed %v, %v", removed, err)
	}
	if _, err := os.Stat(mine.Dir); !os.IsNotExist(err) {
		t.Fatal("the owner's workspace is still there")
	}
	if _, err := os.Stat(other.Dir); err != nil {
		t.Fatal("another owner's workspace was removed")
	}
}
