package harness

import (
	"io"
	"net"
	"net/http"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// gitEnv keeps the machine's git configuration out of the test's git commands.
var gitEnv = []string{"GIT_CONFIG_GLOBAL=" + os.DevNull, "GIT_CONFIG_NOSYSTEM=1"}

func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	args = append([]string{"-c", "user.name=Hangar E2E", "-c", "user.email=e2e@hangar.invalid", "-c", "init.defaultBranch=main"}, args...)
	r := Run(t, time.Minute, gitEnv, "git", append([]string{"-C", dir}, args...)...)
	if r.Code != 0 {
		t.Fatalf("git %s: %s", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

// GitServer serves one bare repository, made of files (path -> content) and
// committed on branch main, over smart HTTP with git http-backend (through
// net/http/cgi) on a loopback port. It returns the server's base URL
// (http://127.0.0.1:PORT); the repository is at BASE/repoPath (e.g.
// "acme/infra.git"), and the commit id.
func GitServer(t testing.TB, repoPath string, files map[string]string) (baseURL, commit string) {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatalf("git is required by this test and is not installed: apt-get install git")
	}
	src := t.TempDir()
	git(t, src, "init", "-q")
	for name, content := range files {
		p := filepath.Join(src, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	git(t, src, "add", "-A")
	git(t, src, "commit", "-q", "-m", "e2e")
	commit = git(t, src, "rev-parse", "HEAD")
	root := t.TempDir()
	git(t, root, "clone", "-q", "--bare", src, filepath.Join(root, repoPath))
	backend := &cgi.Handler{
		Path:   filepath.Join(git(t, root, "--exec-path"), "git-http-backend"),
		Root:   "/",
		Env:    append([]string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"}, gitEnv...),
		Stderr: io.Discard,
	}
	srv := httptest.NewUnstartedServer(backend)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	// The backend answers the smart-HTTP discovery.
	resp, err := http.Get(srv.URL + "/" + repoPath + "/info/refs?service=git-upload-pack")
	if err != nil {
		t.Fatalf("git server: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("git server: GET info/refs: %s", resp.Status)
	}
	return srv.URL, commit
}
