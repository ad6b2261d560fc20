package wsarchive

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

type entry struct {
	name, link string
	typ        byte
	body       string
}

func archive(t *testing.T, entries ...entry) *bytes.Buffer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: 0o644, Size: int64(len(e.body))}
		if e.typ == tar.TypeDir {
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if e.typ == tar.TypeReg {
			tw.Write([]byte(e.body))
		}
	}
	tw.Close()
	return &b
}

func TestRoundTrip(t *testing.T) {
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "mod", ".terraform"), 0o755)
	os.WriteFile(filepath.Join(src, "main.tf"), []byte("resource"), 0o644)
	os.WriteFile(filepath.Join(src, "mod", "plan.out"), []byte("planned"), 0o600)
	os.WriteFile(filepath.Join(src, "run.sh"), []byte("#!/bin/sh"), 0o755)
	os.Symlink("../main.tf", filepath.Join(src, "mod", "link.tf"))
	var b bytes.Buffer
	if err := Write(&b, src); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := Extract(&b, dst, 0); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "mod", "plan.out")); string(got) != "planned" {
		t.Errorf("plan.out = %q", got)
	}
	if got, _ := os.ReadFile(filepath.Join(dst, "mod", "link.tf")); string(got) != "resource" {
		t.Errorf("link.tf = %q", got)
	}
	if l, _ := os.Readlink(filepath.Join(dst, "mod", "link.tf")); l != "../main.tf" {
		t.Errorf("link = %q", l)
	}
	if fi, err := os.Stat(filepath.Join(dst, "run.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("run.sh mode = %v, %v", fi.Mode(), err)
	}
	if fi, err := os.Stat(filepath.Join(dst, "mod", ".terraform")); err != nil || !fi.IsDir() {
		t.Errorf("empty dir: %v", err)
	}
}

func TestExtractRefusesEscapes(t *testing.T) {
	tests := map[string][]entry{
		"dot-dot":              {{name: "../evil", typ: tar.TypeReg, body: "x"}},
		"nested dot-dot":       {{name: "a/../../evil", typ: tar.TypeReg, body: "x"}},
		"absolute":             {{name: "/tmp/evil", typ: tar.TypeReg, body: "x"}},
		"symlink out":          {{name: "l", link: "../../etc", typ: tar.TypeSymlink}},
		"symlink out nested":   {{name: "a/b/l", link: "../../../x", typ: tar.TypeSymlink}},
		"absolute symlink":     {{name: "l", link: "/etc/passwd", typ: tar.TypeSymlink}},
		"write through link":   {{name: "l", link: ".", typ: tar.TypeSymlink}, {name: "l/x", typ: tar.TypeReg, body: "x"}},
		"replace a link":       {{name: "l", link: "a", typ: tar.TypeSymlink}, {name: "l", typ: tar.TypeReg, body: "x"}},
		"chained links escape": {{name: "a/", typ: tar.TypeDir}, {name: "a/b", link: "..", typ: tar.TypeSymlink}, {name: "a/b/c", link: "..", typ: tar.TypeSymlink}},
		"hard link":            {{name: "h", link: "/etc/passwd", typ: tar.TypeLink}},
	}
	for name, entries := range tests {
		t.Run(name, func(t *testing.T) {
			parent := t.TempDir()
			dst := filepath.Join(parent, "ws")
			os.Mkdir(dst, 0o755)
			err := Extract(archive(t, entries...), dst, 0)
			if !errors.Is(err, ErrUnsafe) {
				t.Fatalf("Extract = %v, want ErrUnsafe", err)
			}
			left, _ := os.ReadDir(parent)
			if len(left) != 1 {
				t.Fatalf("something was written next to the workspace: %v", left)
			}
		})
	}
}

func TestExtractLimit(t *testing.T) {
	err := Extract(archive(t, entry{name: "big", typ: tar.TypeReg, body: "0123456789"}), t.TempDir(), 5)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Extract = %v, want ErrTooLarge", err)
	}
}
