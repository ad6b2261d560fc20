package envconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAddr(t *testing.T) {
	for _, tc := range []struct{ v, want string }{
		{"127.0.0.1:7300", ""},
		{":7300", ""},
		{"gateway:7300", ""},
		{"[::1]:0", ""},
		{"dns:///gateway:7300", ""},
		{"unix:///run/hangar.sock", ""},
		{"not-an-address", `HANGAR_X: "not-an-address" is not a network address host:port (address not-an-address: missing port in address)`},
		{"127.0.0.1:port", `port "port" is not a number`},
		{"127.0.0.1:70000", `port "70000" is not a number from 0 to 65535`},
		{"http://gateway:7300", "a URL; give host:port without a scheme"},
		{"my host:1", `bad host "my host"`},
	} {
		r := FromMap(map[string]string{"HANGAR_X": tc.v})
		if got := r.Addr("HANGAR_X", "d:1"); got != tc.v {
			t.Errorf("Addr(%q) = %q", tc.v, got)
		}
		err := r.Err()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Addr(%q): error %v, want %q", tc.v, err, tc.want)
		}
	}
	if got := FromMap(nil).Addr("HANGAR_X", ":9"); got != ":9" {
		t.Errorf("default: %q", got)
	}
}

func TestDirs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name  string
		get   func(r *Reader) string
		value string
		want  string
	}{
		{"existing ok", func(r *Reader) string { return r.ExistingDir("HANGAR_D", "") }, dir, ""},
		{"existing missing", func(r *Reader) string { return r.ExistingDir("HANGAR_D", "") }, missing, "HANGAR_D: directory " + missing + " does not exist"},
		{"existing file", func(r *Reader) string { return r.ExistingDir("HANGAR_D", "") }, file, "HANGAR_D: " + file + " is not a directory"},
		{"state created", func(r *Reader) string { return r.StateDir("HANGAR_D", "") }, filepath.Join(dir, "a", "b"), ""},
		{"state file", func(r *Reader) string { return r.StateDir("HANGAR_D", "") }, file, "is not a directory"},
		{"state under a file", func(r *Reader) string { return r.StateDir("HANGAR_D", "") }, filepath.Join(file, "x"), "HANGAR_D: stat " + filepath.Join(file, "x") + ": not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := FromMap(map[string]string{"HANGAR_D": tc.value})
			tc.get(r)
			err := r.Err()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
	if st, err := os.Stat(filepath.Join(dir, "a", "b")); err != nil || !st.IsDir() {
		t.Errorf("StateDir did not create the directory: %v", err)
	}
}

func TestExistingFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policy.rego")
	if err := os.WriteFile(file, []byte("package x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ v, want string }{
		{file, ""},
		{filepath.Join(dir, "none.rego"), "HANGAR_F: cannot read " + filepath.Join(dir, "none.rego") + ": no such file or directory"},
		{dir, "HANGAR_F: " + dir + " is a directory, not a file"},
	} {
		r := FromMap(map[string]string{"HANGAR_F": tc.v})
		r.ExistingFile("HANGAR_F", "")
		err := r.Err()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || err.Error() != tc.want) {
			t.Errorf("ExistingFile(%q): %v, want %q", tc.v, err, tc.want)
		}
	}
}
