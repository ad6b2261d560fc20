package cpdir

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// TestPoolNameCharsIsThePattern: poolNameChars accepts exactly what the
// regular expression it replaced did.
func TestPoolNameCharsIsThePattern(t *testing.T) {
	pattern := regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	const alphabet = "az09-A_. \x00"
	r := rand.New(rand.NewPCG(1, 2))
	cases := []string{"", "a", "-a", "a-", "A", strings.Repeat("a", 63), strings.Repeat("a", 64), "a\n"}
	for range 20000 {
		b := make([]byte, r.IntN(66))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		if got, want := poolNameChars(s), pattern.MatchString(s); got != want {
			t.Errorf("poolNameChars(%q) = %t, the pattern says %t", s, got, want)
		}
	}
}
