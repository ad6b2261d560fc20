package ids

import (
	"errors"
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"run-0123456789abcdef", true},
		{"prod", true},
		{"Pool_2-b", true},
		{"cmd-0123456789abcdef0123456789abcdef", true},
		{strings.Repeat("a", MaxLen), true},
		{strings.Repeat("a", MaxLen+1), false},
		{"", false},
		{".", false},
		{"..", false},
		{"a.b", false},
		{"a/b", false},
		{`a\b`, false},
		{"a+b", false},
		{"a#b", false},
		{"$share", false},
		{"a b", false},
		{"a:b", false},
		{"a\x00b", false},
		{"é", false},
	} {
		if got := Valid(tc.id); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.id, got, tc.want)
		}
		for name, f := range map[string]func(string) bool{"run": ValidRunID, "pool": ValidPoolID, "command": ValidCommandID} {
			if got := f(tc.id); got != tc.want {
				t.Errorf("%s: Valid(%q) = %v, want %v", name, tc.id, got, tc.want)
			}
		}
	}
}

func TestCheck(t *testing.T) {
	if err := CheckRunID("run-1"); err != nil {
		t.Fatal(err)
	}
	err := CheckRunID("../etc")
	if !errors.Is(err, ErrInvalidRunID) || !strings.Contains(err.Error(), `"../etc"`) || !strings.Contains(err.Error(), Rule) {
		t.Fatalf("CheckRunID: %v", err)
	}
	if err := CheckPoolID("a/b"); !errors.Is(err, ErrInvalidPoolID) {
		t.Fatalf("CheckPoolID: %v", err)
	}
	if err := CheckCommandID(strings.Repeat("x", 1000)); !errors.Is(err, ErrInvalidCommandID) || len(err.Error()) > 200 {
		t.Fatalf("CheckCommandID of a long id: %v", err)
	}
}

func FuzzValid(f *testing.F) {
	f.Add("run-1")
	f.Add("../x")
	f.Fuzz(func(t *testing.T, id string) {
		if !Valid(id) {
			return
		}
		if strings.ContainsAny(id, "./\\+#$ \x00") || len(id) > MaxLen || id == "" {
			t.Fatalf("Valid(%q) but unsafe", id)
		}
	})
}
