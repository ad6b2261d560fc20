package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// maskAll writes input through a new writer in writes of the given sizes
// (cycled; nil means one write) and returns what reached the destination.
func maskAll(t testing.TB, set *Set, input []byte, sizes []int) []byte {
	t.Helper()
	var dst bytes.Buffer
	w := set.NewWriter(&dst)
	for i := 0; len(input) > 0; i++ {
		n := len(input)
		if len(sizes) > 0 {
			n = min(max(sizes[i%len(sizes)], 1), len(input))
		}
		if m, err := w.Write(input[:n]); err != nil || m != n {
			t.Fatalf("Write = %d, %v; want %d, nil", m, err, n)
		}
		input = input[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return dst.Bytes()
}

// splits are the write patterns every table case is run with.
var splits = map[string][]int{
	"whole":  nil,
	"bytes":  {1},
	"pairs":  {2},
	"uneven": {3, 1, 7, 2, 5},
}

func b64inner(enc *base64.Encoding, secret string, k int) string {
	raw := enc.WithPadding(base64.NoPadding).EncodeToString(append(make([]byte, k), secret...))
	return raw[(8*k+5)/6 : 8*(k+len(secret))/6]
}

func TestMask(t *testing.T) {
	const sec = "s3cr3t-V4lue"
	special := "p@ss w/rd\"<&>\\é+="
	blob := func(enc *base64.Encoding, prefix, secret, suffix string) (string, string) {
		// The blob with the secret at alignment len(prefix)%3, and the
		// expected output: the characters that also depend on the
		// neighbours survive, the stable inner part is masked.
		e := enc.WithPadding(base64.NoPadding).EncodeToString([]byte(prefix + secret + suffix))
		k := len(prefix)
		first := (8*k + 5) / 6
		last := 8 * (k + len(secret)) / 6
		return "blob=" + e + ";", "blob=" + e[:first] + "******" + e[last:] + ";"
	}
	type tc struct {
		name    string
		secrets []string
		opts    Options
		in      string
		want    string
	}
	cases := []tc{
		{name: "plain", secrets: []string{sec}, in: "token is " + sec + " ok", want: "token is ****** ok"},
		{name: "no secret", secrets: []string{sec}, in: "nothing to see here s3cr3t-V4lu", want: "nothing to see here s3cr3t-V4lu"},
		{name: "no secrets at all", in: "plain text", want: "plain text"},
		{name: "twice", secrets: []string{sec}, in: sec + "," + sec, want: "******,******"},
		{name: "adjacent collapse", secrets: []string{sec}, in: sec + sec, want: "******"},
		{name: "two adjacent secrets", secrets: []string{"abcdefgh", "12345678"}, in: "<abcdefgh12345678>", want: "<******>"},
		{name: "overlap", secrets: []string{"abcdef12", "ef123456"}, in: "xxabcdef123456yy", want: "xx******yy"},
		{name: "contained", secrets: []string{"cdefgh", "abcdefghij"}, in: "_abcdefghij_cdefgh_", want: "_******_******_"},
		{name: "self overlap", secrets: []string{"abcabc"}, in: "xabcabcabcx", want: "x******x"},
		{name: "chain of overlaps", secrets: []string{"aaaaab", "bccccc", "cccccd"}, in: "aaaaabcccccdd", want: "******d"},
		{name: "prefix shared", secrets: []string{"abcdefXX", "abcdefYY"}, in: "abcdefZZ abcdefYY", want: "abcdefZZ ******"},
		{name: "too short", secrets: []string{"abc", sec}, in: "abc " + sec, want: "abc ******"},
		{name: "min length option", secrets: []string{"abc"}, opts: Options{MinLength: 3, DisableEncodings: true}, in: "xabcx", want: "x******x"},
		{name: "custom mask", secrets: []string{sec}, opts: Options{Mask: []byte("[masked]")}, in: sec + "!", want: "[masked]!"},
		{name: "empty mask", secrets: []string{sec}, opts: Options{Mask: []byte{}}, in: "<" + sec + ">", want: "<>"},
		{name: "multi-line", secrets: []string{"line-one\nline-two"}, in: "a\nline-one\nline-two\nb", want: "a\n******\nb"},
		{name: "multi-line crlf", secrets: []string{"line-one\nline-two"}, in: "a\r\nline-one\r\nline-two\r\nb", want: "a\r\n******\r\nb"},
		{name: "multi-line by line", secrets: []string{"-----BEGIN KEY-----\nMIIEvQIBADANBgkq\n-----END KEY-----\n"},
			in: "key: MIIEvQIBADANBgkq\r\n", want: "key: ******\r\n"},
		{name: "trailing newline", secrets: []string{"from-a-file\n"}, in: "v=from-a-file;", want: "v=******;"},
		{name: "trailing newline base64", secrets: []string{"from-a-file\n"}, in: "b=" + base64.StdEncoding.EncodeToString([]byte("from-a-file")) + ";", want: "b=******;"},
		{name: "base64 std alone", secrets: []string{special}, in: "x " + base64.StdEncoding.EncodeToString([]byte(special)) + " y", want: "x ****** y"},
		{name: "base64 url alone", secrets: []string{special}, in: "x " + base64.URLEncoding.EncodeToString([]byte(special)) + " y", want: "x ****** y"},
		{name: "base64 raw std", secrets: []string{special}, in: "x " + base64.RawStdEncoding.EncodeToString([]byte(special)) + " y", want: "x ****** y"},
		{name: "base64 raw url", secrets: []string{special}, in: "x " + base64.RawURLEncoding.EncodeToString([]byte(special)) + " y", want: "x ****** y"},
		{name: "base64 tail", secrets: []string{sec}, in: "Basic " + base64.StdEncoding.EncodeToString([]byte("user:"+sec)) + "\n",
			want: "Basic " + base64.StdEncoding.EncodeToString([]byte("user:" + sec))[:7] + "******\n"},
		{name: "hex lower", secrets: []string{sec}, in: "h=" + hex.EncodeToString([]byte(sec)), want: "h=******"},
		{name: "hex upper", secrets: []string{sec}, in: "h=" + strings.ToUpper(hex.EncodeToString([]byte(sec))), want: "h=******"},
		{name: "query escape", secrets: []string{special}, in: "?q=" + url.QueryEscape(special) + "&", want: "?q=******&"},
		{name: "path escape", secrets: []string{special}, in: "/p/" + url.PathEscape(special) + "/", want: "/p/******/"},
		{name: "go quote", secrets: []string{special + "\n\t"}, in: "v=" + strconv.Quote(special+"\n\t"), want: "v=\"******\""},
		{name: "json", secrets: []string{special}, in: `{"v":` + mustJSON(special) + `}`, want: `{"v":"******"}`},
		{name: "json no html escape", secrets: []string{special}, in: `{"v":"p@ss w/rd\"<&>\\é+="}`, want: `{"v":"******"}`},
		{name: "encodings disabled", secrets: []string{sec}, opts: Options{DisableEncodings: true},
			in: hex.EncodeToString([]byte(sec)) + " " + sec, want: hex.EncodeToString([]byte(sec)) + " ******"},
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for k, prefix := range []string{"", "P", "PQ", "PQR", "PQRS"} {
			in, want := blob(enc, prefix, special, "tail-bytes")
			cases = append(cases, tc{name: "base64 blob align " + strconv.Itoa(k), secrets: []string{special}, in: in, want: want})
		}
	}
	for _, c := range cases {
		secrets := make([][]byte, len(c.secrets))
		for i, s := range c.secrets {
			secrets[i] = []byte(s)
		}
		set, _ := NewSet(secrets, c.opts)
		for sname, sizes := range splits {
			t.Run(c.name+"/"+sname, func(t *testing.T) {
				got := maskAll(t, set, []byte(c.in), sizes)
				if string(got) != c.want {
					t.Errorf("mask(%q)\n got %q\nwant %q", c.in, got, c.want)
				}
				if ref, _ := refMask([]byte(c.in), secrets, c.opts); !bytes.Equal(got, ref) {
					t.Errorf("reference disagrees: %q", ref)
				}
			})
		}
	}
}

func mustJSON(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func mustPatterns(secrets [][]byte, opts Options) [][]byte {
	p, _ := patterns(secrets, opts)
	return patternBytes(p)
}

func patternBytes(p []pattern) [][]byte {
	out := make([][]byte, len(p))
	for i := range p {
		out[i] = p[i].b
	}
	return out
}

func TestBase64InnerParts(t *testing.T) {
	const sec = "0123456789abcdef"
	set, _ := NewSet([][]byte{[]byte(sec)}, Options{})
	for k := 0; k < 3; k++ {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			inner := b64inner(enc, sec, k)
			if len(inner) < DefaultMinLength {
				t.Fatalf("inner part too short: %q", inner)
			}
			got := maskAll(t, set, []byte("["+inner+"]"), nil)
			if string(got) != "[******]" {
				t.Errorf("alignment %d: got %q", k, got)
			}
		}
	}
}

func TestReport(t *testing.T) {
	secrets := [][]byte{[]byte("short"), []byte("long-enough"), nil, []byte("abcdef"), []byte("12345")}
	set, rep := NewSet(secrets, Options{})
	if want := []int{0, 2, 4}; !slices.Equal(rep.TooShort, want) {
		t.Errorf("TooShort = %v, want %v", rep.TooShort, want)
	}
	if rep.Patterns == 0 || rep.States != len(set.a.depth) {
		t.Errorf("report = %+v", rep)
	}
	// A derived pattern shorter than MinLength is dropped.
	_, rep = NewSet([][]byte{[]byte("abcdefghij")}, Options{MinLength: 10, DisableEncodings: true})
	if rep.Patterns != 1 {
		t.Errorf("Patterns = %d, want 1", rep.Patterns)
	}
	for _, p := range mustPatterns([][]byte{[]byte("ab\"cd\ne")}, Options{MinLength: 9}) {
		if len(p) < 9 {
			t.Errorf("pattern %q shorter than MinLength", p)
		}
	}
}

// TestHeldUntilClose: bytes that may begin a secret wait for Close.
func TestHeldUntilClose(t *testing.T) {
	set, _ := NewSet([][]byte{[]byte("abcdef123")}, Options{DisableEncodings: true})
	var dst bytes.Buffer
	w := set.NewWriter(&dst)
	if _, err := w.Write([]byte("log: abc")); err != nil {
		t.Fatal(err)
	}
	if got := dst.String(); got != "log: " {
		t.Fatalf("before Close: %q, want %q", got, "log: ")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := dst.String(); got != "log: abc" {
		t.Fatalf("after Close: %q", got)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
}

// TestReleasedWhenImpossible: held bytes come out as soon as they can no
// longer begin a secret, without Close.
func TestReleasedWhenImpossible(t *testing.T) {
	set, _ := NewSet([][]byte{[]byte("abcdef123")}, Options{})
	var dst bytes.Buffer
	w := set.NewWriter(&dst)
	w.Write([]byte("abc"))
	if dst.Len() != 0 {
		t.Fatalf("released too early: %q", dst.String())
	}
	w.Write([]byte("X"))
	if got := dst.String(); got != "abcX" {
		t.Fatalf("got %q, want %q", got, "abcX")
	}
	// A partial match that restarts: "abcabc" keeps only the second "abc".
	dst.Reset()
	w.Write([]byte("abcab"))
	w.Write([]byte("c"))
	if got := dst.String(); got != "abc" {
		t.Fatalf("got %q, want %q", got, "abc")
	}
}

// TestSlowSecret: a secret printed one byte per write never leaks, however
// long the pauses; the mask waits for the next byte, since an adjacent
// secret would join it.
func TestSlowSecret(t *testing.T) {
	const sec = "hunter2-is-my-password"
	set, _ := NewSet([][]byte{[]byte(sec)}, Options{})
	var dst bytes.Buffer
	w := set.NewWriter(&dst)
	w.Write([]byte("pw="))
	for i := 0; i < len(sec); i++ {
		w.Write([]byte{sec[i]})
		if strings.Contains(dst.String(), sec[:1]) {
			t.Fatalf("after %d bytes, output %q shows part of the secret", i+1, dst.String())
		}
	}
	w.Write([]byte("\n"))
	if got := dst.String(); got != "pw=******\n" {
		t.Fatalf("got %q", got)
	}
	if st := w.Stats(); st.BytesIn != int64(4+len(sec)) || st.BytesOut != 10 || st.Masks != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestFlush(t *testing.T) {
	set, _ := NewSet([][]byte{[]byte("abcdef123")}, Options{})
	var dst bytes.Buffer
	w := set.NewWriter(&dst)
	w.Write([]byte("1 abcdef123"))
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := dst.String(); got != "1 ******" {
		t.Fatalf("after Flush: %q", got)
	}
	// Flush resets the automaton: the writer goes on masking.
	w.Write([]byte(" 2 abcdef123 3"))
	w.Close()
	if got := dst.String(); got != "1 ****** 2 ****** 3" {
		t.Fatalf("got %q", got)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(p), nil
}

func TestDestinationError(t *testing.T) {
	set, _ := NewSet([][]byte{[]byte("abcdef123")}, Options{})
	w := set.NewWriter(&failWriter{n: 1})
	if _, err := w.Write([]byte("first line\n")); err != nil {
		t.Fatal(err)
	}
	if n, err := w.Write([]byte("second line\n")); err == nil || n != 0 {
		t.Fatalf("Write = %d, %v; want error", n, err)
	}
	if _, err := w.Write([]byte("third\n")); err == nil {
		t.Fatal("error is not sticky")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close lost the error")
	}
}

// TestSharedSet runs many writers of one set concurrently (run with -race).
func TestSharedSet(t *testing.T) {
	secrets := [][]byte{[]byte("alpha-secret-1"), []byte("bravo-secret-2")}
	set, _ := NewSet(secrets, Options{})
	in := []byte(strings.Repeat("x alpha-secret-1 y bravo-secret-2 z\n", 200))
	want, _ := refMask(in, secrets, Options{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			sizes := []int{1 + rng.IntN(64), 1 + rng.IntN(64), 1 + rng.IntN(64)}
			if got := maskAll(t, set, in, sizes); !bytes.Equal(got, want) {
				t.Errorf("writer %d: output differs", g)
			}
		}()
	}
	wg.Wait()
}

// TestRandomLong compares long writes (scanned in lanes) and short ones
// with the reference on text dense with secrets and their encoded forms.
func TestRandomLong(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 20; round++ {
		var secrets [][]byte
		for range 1 + rng.IntN(8) {
			s := make([]byte, 4+rng.IntN(30))
			for i := range s {
				s[i] = "abAB01\n+/=-_ %\"\\"[rng.IntN(16)]
			}
			secrets = append(secrets, s)
		}
		opts := Options{MinLength: 4 + round%2}
		set, _ := NewSet(secrets, opts)
		pats := mustPatterns(secrets, opts)
		var in []byte
		for len(in) < 12<<10 {
			if rng.IntN(4) == 0 {
				in = append(in, pats[rng.IntN(len(pats))]...)
			} else {
				in = append(in, "abAB01\n+/=-_ %xyz"[rng.IntN(17)])
			}
		}
		want, _ := refMask(in, secrets, opts)
		for _, sizes := range [][]int{nil, {4096}, {1000, 1, 3000, 7}, {1}} {
			if got := maskAll(t, set, in, sizes); !bytes.Equal(got, want) {
				t.Fatalf("round %d sizes %v: output differs from reference", round, sizes)
			}
		}
	}
}

// TestLargeWrite: one Write larger than the internal chunk, with secrets
// across chunk boundaries.
func TestLargeWrite(t *testing.T) {
	const sec = "Zm9vYmFyLXNlY3JldC12YWx1ZQ"
	set, _ := NewSet([][]byte{[]byte(sec)}, Options{})
	var in, want bytes.Buffer
	for _, gap := range []int{maxChunk - 10, maxChunk - 3, maxChunk, 5, maxChunk + 1} {
		in.WriteString(strings.Repeat("x", gap))
		want.WriteString(strings.Repeat("x", gap))
		in.WriteString(sec)
		want.WriteString("******")
	}
	in.WriteString("end")
	want.WriteString("end")
	var dst bytes.Buffer
	w := set.NewWriter(&dst)
	if n, err := w.Write(in.Bytes()); err != nil || n != in.Len() {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if got := dst.String(); got != want.String()[:len(got)] || len(got) < want.Len()-3 {
		t.Fatalf("before Close: output is not the expected prefix (len %d of %d)", len(got), want.Len())
	}
	w.Close()
	if dst.String() != want.String() {
		t.Fatal("output differs")
	}
}
