package devshell

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMain_(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f.txt"), []byte("content\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GREETING", "hello")
	for _, tc := range []struct {
		name       string
		args       []string
		stdin      string
		wantOut    string
		wantErrHas string
		wantCode   int
	}{
		{"demo script", []string{"/bin/sh", "-c", "set -e\nprintf '%s\\n' '+ echo' >&2\necho \"$GREETING\"\n"}, "", "hello\n", "+ echo", 0},
		{"set -e stops at a failure", []string{"sh", "-c", "set -e\nfalse\necho not-reached"}, "", "", "", 1},
		{"exit status", []string{"sh", "-c", "exit 7"}, "", "", "", 7},
		{"unknown command", []string{"sh", "-c", "hangar-no-such-command-x1 plan"}, "", "", "not found", 127},
		{"positional parameters", []string{"sh", "-c", `echo "$1-$2"`, "name", "a", "b"}, "", "a-b\n", "", 0},
		{"cat a file and stdin", []string{"sh", "-c", "cat " + filepath.Join(dir, "f.txt") + " -"}, "in\n", "content\nin\n", "", 0},
		{"cat a missing file", []string{"cat", filepath.Join(dir, "none")}, "", "", "no such file", 1},
		{"ls", []string{"sh", "-c", "ls " + dir}, "", "f.txt\n", "", 0},
		{"mkdir and rm", []string{"sh", "-c", "mkdir -p " + dir + "/a/b && rm -r " + dir + "/a && ls " + dir}, "", "f.txt\n", "", 0},
		{"sleep", []string{"sleep", "0.01"}, "", "", "", 0},
		{"bad sleep", []string{"sleep", "soon"}, "", "", "invalid time interval", 1},
		{"called as echo", []string{"/bin/echo", "a", "b c"}, "", "a b c\n", "", 0},
		{"called as [", []string{"/bin/[", "1", "=", "2", "]"}, "", "", "", 1},
		{"env exports", []string{"sh", "-c", "X=1; export X; env"}, "", "X=1", "", 0},
		{"syntax error", []string{"sh", "-c", "if then"}, "", "", "sh:", 2},
		{"no script", []string{"sh"}, "", "", "usage: sh -c SCRIPT", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := Main(context.Background(), tc.args, strings.NewReader(tc.stdin), &out, &errb)
			if code != tc.wantCode {
				t.Errorf("exit %d, want %d (stderr %q)", code, tc.wantCode, errb.String())
			}
			if tc.name == "env exports" {
				if !strings.Contains(out.String(), tc.wantOut+"\n") {
					t.Errorf("stdout %q lacks %q", out.String(), tc.wantOut)
				}
			} else if out.String() != tc.wantOut {
				t.Errorf("stdout %q, want %q", out.String(), tc.wantOut)
			}
			if !strings.Contains(errb.String(), tc.wantErrHas) {
				t.Errorf("stderr %q lacks %q", errb.String(), tc.wantErrHas)
			}
		})
	}
}
