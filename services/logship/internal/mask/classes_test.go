package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// wrapLines breaks s into lines of width characters joined by sep, as
// base64 (76), xxd -p (60) and PEM (64) do.
func wrapLines(s string, width int, sep string) string {
	var b strings.Builder
	for i := 0; i < len(s); i += width {
		if i > 0 {
			b.WriteString(sep)
		}
		b.WriteString(s[i:min(i+width, len(s))])
	}
	return b.String()
}

func stripAllBreaks(b []byte) []byte { return stripBreaks(b) }

// lowerEscapes writes the hex digits of percent escapes in lower case.
func lowerEscapes(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = bytes.ToLower(b[i+1 : i+2])[0], bytes.ToLower(b[i+2 : i+3])[0]
		}
	}
	return string(b)
}

const testPEM = "-----BEGIN PRIVATE KEY-----\n" +
	"MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj\n" +
	"MzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDuictGeurT8jNbvJZHtCSuYEvu\n" +
	"NMoSfm76oqFvAp8Gy0iz5sxjZmSnXyCdPEovGhLa0VzMaQ8s+CLOyS56YyCFGeJZ\n" +
	"-----END PRIVATE KEY-----\n"

// TestClasses: one case per class of encodings in docs/MASKING.md, each in
// several write splits, compared with the expected output and the
// reference.
func TestClasses(t *testing.T) {
	const sec = "s3cr3t/V4lue+with spaces&<x>é\x01!"
	long := strings.Repeat("0123456789abcdefghij", 6) // 120 bytes
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	jsonEsc := func(s string) string { // every byte a \u escape where allowed, "/" as "\/"
		var b strings.Builder
		for _, r := range s {
			switch {
			case r == '/':
				b.WriteString(`\/`)
			case r < 0x80:
				fmt.Fprintf(&b, `\u%04X`, r)
			default:
				fmt.Fprintf(&b, `\u%04x`, r)
			}
		}
		return b.String()
	}
	pct := func(s string, lower bool) string {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			f := "%%%02X"
			if lower || i%2 == 1 {
				f = "%%%02x"
			}
			fmt.Fprintf(&b, f, s[i])
		}
		return b.String()
	}
	type tc struct {
		name, secret, in, want string
		opts                   Options
	}
	cases := []tc{
		{name: "raw", secret: sec, in: "v=" + sec + ";", want: "v=******;"},
		{name: "base64 wrapped 76 LF", secret: long, in: "b64:\n" + wrapLines(b64(long), 76, "\n") + "\nend\n", want: "b64:\n******\nend\n"},
		{name: "base64 wrapped 76 CRLF", secret: long, in: "b64:\r\n" + wrapLines(b64(long), 76, "\r\n") + "\r\nend", want: "b64:\r\n******\r\nend"},
		{name: "base64 wrapped 5", secret: long, in: "[" + wrapLines(b64(long), 5, "\n") + "]", want: "[******]"},
		{name: "base64url no padding", secret: long + "?>", in: "t=" + base64.RawURLEncoding.EncodeToString([]byte(long+"?>")) + "&", want: "t=******&"},
		{name: "PEM piped through base64", secret: testPEM, in: "$ base64 key.pem\n" + wrapLines(b64(testPEM), 76, "\n") + "\n$ ", want: "$ base64 key.pem\n******\n$ "},
		{name: "hex xxd -p 60", secret: long, in: "xxd:\n" + wrapLines(hex.EncodeToString([]byte(long)), 60, "\n") + "\n.", want: "xxd:\n******\n."},
		{name: "hex upper wrapped", secret: long, in: "H " + wrapLines(strings.ToUpper(hex.EncodeToString([]byte(long))), 32, "\r\n") + " H", want: "H ****** H"},
		{name: "percent upper", secret: sec, in: "?p=" + pct(sec, false) + "&", want: "?p=******&"},
		{name: "percent lower", secret: sec, in: "?p=" + pct(sec, true) + "&", want: "?p=******&"},
		{name: "percent query form", secret: sec, in: "?p=" + url.QueryEscape(sec) + "&", want: "?p=******&"},
		{name: "percent query lower-case", secret: sec, in: "?p=" + lowerEscapes(url.QueryEscape(sec)) + "&", want: "?p=******&"},
		{name: "percent path form", secret: sec, in: "/p/" + url.PathEscape(sec) + "/", want: "/p/******/"},
		{name: "json", secret: sec, in: `{"v":` + mustJSON(sec) + `}`, want: `{"v":"******"}`},
		{name: "json every escape", secret: sec, in: `{"v":"` + jsonEsc(sec) + `"}`, want: `{"v":"******"}`},
		{name: "json solidus", secret: "a/b/c/d/e", in: `"a\/b\/c\/d\/e"`, want: `"******"`},
		{name: "json surrogate pair", secret: "key-😀-value", in: `"key-\ud83d\ude00-value"`, want: `"******"`},
		{name: "go quote", secret: sec, in: fmt.Sprintf("%q", sec), want: `"******"`},
		{name: "go ascii quote", secret: sec, in: fmt.Sprintf("%+q", sec), want: `"******"`},
		{name: "go hex and octal escapes", secret: "ABCDEFGH", in: `"\x41\102CD\x45FGH"`, want: `"******"`},
		{name: "multi-line LF", secret: "line-one\nline-two\n", in: "line-one\nline-two\n!", want: "******!"},
		{name: "multi-line CRLF", secret: "line-one\nline-two\n", in: "line-one\r\nline-two\r\n!", want: "******!"},
		{name: "multi-line trimmed", secret: "line-one\nline-two\n", in: "line-one\r\nline-two.", want: "******."},
		{name: "multi-line short lines", secret: "ab\ncd\nef-gh", in: "ab\ncd\nef-gh\n", want: "******\n"},
		{name: "raw value not wrap-tolerant", secret: "hunter2-correct-horse", in: "hunter2-\ncorrect-horse\n", want: "hunter2-\ncorrect-horse\n"},
		{name: "multi-line line by line", secret: "line-one\nline-two\n", in: "echo line-two\n", want: "echo ******\n"},
		{name: "multi-line json", secret: "line-one\nline-two", in: `"line-one\nline-two"`, want: `"******"`},
		{name: "line break after a match", secret: sec, in: sec + "\n" + sec + "\n", want: "******\n******\n"},
	}
	for _, c := range cases {
		secrets := [][]byte{[]byte(c.secret)}
		set, rep := NewSet(secrets, c.opts)
		if len(rep.TooShort) > 0 {
			t.Fatalf("%s: secret too short", c.name)
		}
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

// TestWrappedAnyOffset: base64 of a value that starts at any offset of the
// encoded blob, wrapped at any width, never shows the secret's stable part
// (but for at most its first 3 characters, when a break falls there).
func TestWrappedAnyOffset(t *testing.T) {
	secret := []byte("correct-horse-battery-staple-42")
	set, _ := NewSet([][]byte{secret}, Options{})
	for off := 0; off < 9; off++ {
		for _, width := range []int{6, 7, 8, 60, 64, 76} {
			prefix := strings.Repeat("u", off) + ":"
			enc := base64.StdEncoding.EncodeToString(append([]byte(prefix), secret...))
			in := []byte(wrapLines(enc, width, "\n") + "\n")
			got := maskAll(t, set, in, []int{13})
			k := len(prefix)
			core := enc[(8*k+5)/6+3 : 8*(k+len(secret))/6]
			if bytes.Contains(stripAllBreaks(got), []byte(core)) {
				t.Errorf("offset %d width %d: %q shows %q", off, width, got, core)
			}
			if ref, _ := refMask(in, [][]byte{secret}, Options{}); !bytes.Equal(got, ref) {
				t.Errorf("offset %d width %d: reference disagrees", off, width)
			}
		}
	}
}

// TestKnownFormats: well-known credentials are masked undeclared, and
// near-misses are not.
func TestKnownFormats(t *testing.T) {
	gh := "ghp_" + strings.Repeat("aB3", 12)
	jwt := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
	cases := []struct{ name, in, want string }{
		{"github", "token " + gh + "\n", "token ******\n"},
		{"github short", "ghp_abc is not one\n", "ghp_abc is not one\n"},
		{"github fine-grained", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ012345 ok", "****** ok"},
		{"gitlab", "glpat-abcdefghij0123456789 ok", "****** ok"},
		{"aws access key id", "id=AKIAIOSFODNN7EXAMPLE;", "id=******;"},
		{"aws sts key id", "ASIAIOSFODNN7EXAMPLE\n", "******\n"},
		{"aws id too long", "AKIAIOSFODNN7EXAMPLEX\n", "AKIAIOSFODNN7EXAMPLEX\n"},
		{"aws secret in context", "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n", "aws_secret_access_key = ******\n"},
		{"aws secret in json", `"SecretAccessKey": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",`, `"SecretAccessKey": "******",`},
		{"slack token", "xoxb-1234567890-abcdefghijkl ", "****** "},
		{"slack webhook", "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX\n", "https://hooks.slack.com/services/******\n"},
		{"google api key", "key=AIzaSyA1234567890abcdefghijklmnopqrstuv&", "key=******&"},
		{"stripe", "sk_live_0123456789abcdefghijklmn.", "******."},
		{"jwt", "Authorization: Bearer " + jwt + "\n", "Authorization: Bearer ******\n"},
		{"pem block", "key:\n" + testPEM + "done\n", "key:\n******\ndone\n"},
		{"pem public key", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n", "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"},
		{"pem unfinished", "-----BEGIN RSA PRIVATE KEY-----\nMIIEow", "******"},
	}
	set, _ := NewSet(nil, Options{})
	off, _ := NewSet(nil, Options{DisableKnownFormats: true})
	for _, c := range cases {
		for sname, sizes := range splits {
			t.Run(c.name+"/"+sname, func(t *testing.T) {
				got := maskAll(t, set, []byte(c.in), sizes)
				if string(got) != c.want {
					t.Errorf("mask(%q)\n got %q\nwant %q", c.in, got, c.want)
				}
				if ref, _ := refMask([]byte(c.in), nil, Options{}); !bytes.Equal(got, ref) {
					t.Errorf("reference disagrees: %q", ref)
				}
				if got := maskAll(t, off, []byte(c.in), sizes); string(got) != c.in {
					t.Errorf("with DisableKnownFormats: %q", got)
				}
			})
		}
	}
}

// TestPending: Pending says how many bytes are held; zero is a clean point.
func TestPending(t *testing.T) {
	set, _ := NewSet([][]byte{[]byte("abcdef123")}, Options{})
	var dst bytes.Buffer
	w := set.NewWriter(&dst)
	steps := []struct {
		in      string
		pending int
	}{
		{"plain line\n", 0},
		{"x abc", 3},
		{"def", 6},
		{"123", 9}, // a mask not yet written: an adjacent match would join it
		{" ", 0},
		{"%61%62", 6}, // could be the percent-encoded secret
		{"!", 0},
		{`{"k":"\u00`, 4},
		{`41"} secret_access_key = `, 20}, // a known format's name: its value may follow
		{"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKE\n", 0}, // 39 bytes: not a key
	}
	for _, s := range steps {
		w.Write([]byte(s.in))
		if got := w.Pending(); got != s.pending {
			t.Fatalf("after %q: Pending() = %d, want %d (out %q)", s.in, got, s.pending, dst.String())
		}
		if w.Clean() != (s.pending == 0) {
			t.Fatalf("after %q: Clean() = %v", s.in, w.Clean())
		}
	}
	if want := "plain line\nx ****** %61%62!{\"k\":\"\\u0041\"} secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKE\n"; dst.String() != want {
		t.Fatalf("got %q, want %q", dst.String(), want)
	}
}

// TestReportNotDerived names the encodings too short to mask.
func TestReportNotDerived(t *testing.T) {
	_, rep := NewSet([][]byte{[]byte("abcdefg"), []byte("a-much-longer-secret")}, Options{MinLength: 7})
	if len(rep.NotDerived) != 1 || rep.NotDerived[0].Secret != 0 {
		t.Fatalf("NotDerived = %+v", rep.NotDerived)
	}
	_, rep = NewSet([][]byte{[]byte("abcdefg")}, Options{DisableEncodings: true})
	if len(rep.NotDerived) != 1 || len(rep.NotDerived[0].Encodings) < 3 {
		t.Fatalf("NotDerived = %+v", rep.NotDerived)
	}
	b, _ := json.Marshal(rep)
	if bytes.Contains(b, []byte("abcdefg")) {
		t.Fatal("report holds a secret")
	}
}

func TestCheckSecrets(t *testing.T) {
	if err := CheckSecrets([][]byte{make([]byte, MaxSecretBytes)}); err != nil {
		t.Fatal(err)
	}
	err := CheckSecrets([][]byte{make([]byte, MaxSecretBytes), {1}})
	if err == nil || !strings.Contains(err.Error(), "262145 bytes") {
		t.Fatalf("err = %v", err)
	}
	if _, _, err := Compile([][]byte{make([]byte, MaxSecretBytes+1)}, Options{}); err == nil {
		t.Fatal("Compile took too many secret bytes")
	}
}
