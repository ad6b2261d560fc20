package tlsconfig

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// TestValidNameIsThePattern: validName accepts exactly what the regular
// expression it replaced did.
func TestValidNameIsThePattern(t *testing.T) {
	pattern := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	const alphabet = "aZ09._-/ :\x00é"
	r := rand.New(rand.NewPCG(1, 2))
	cases := []string{"", "a", "-a", ".a", "_a", "a-", "a.b_c-D9", strings.Repeat("a", 128), strings.Repeat("a", 129), "a\n"}
	for range 20000 {
		b := make([]byte, r.IntN(131))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		if got, want := validName(s), pattern.MatchString(s); got != want {
			t.Errorf("validName(%q) = %t, the pattern says %t", s, got, want)
		}
	}
}
