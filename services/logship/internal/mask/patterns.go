package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"slices"
	"strconv"
)

// derive returns the byte strings that reveal secret when they appear in a
// log: the raw value and the value without surrounding white space (the
// shell's $(cat file) drops a file's final newline), the terminal form and
// each line of a multi-line value, and (when encodings is true) the encoded
// forms of both values that a job commonly prints. The result may contain
// duplicates and strings shorter than the minimum length; the caller
// filters them.
func derive(secret []byte, encodings bool) [][]byte {
	values := [][]byte{secret}
	if t := bytes.TrimSpace(secret); len(t) > 0 && len(t) < len(secret) {
		values = append(values, t)
	}
	out := slices.Clone(values)
	if bytes.IndexByte(secret, '\n') >= 0 {
		// A terminal with ONLCR set turns every "\n" into "\r\n".
		out = append(out, bytes.ReplaceAll(secret, []byte("\n"), []byte("\r\n")))
		// A multi-line value (a key, a certificate) is often printed
		// or echoed line by line; each line is masked on its own.
		for line := range bytes.Lines(secret) {
			out = append(out, bytes.TrimSpace(line))
		}
	}
	if encodings {
		for _, v := range values {
			out = append(out, encoded(v)...)
		}
	}
	return out
}

// encoded returns the encoded forms of v: base64 and base64url (see
// base64Forms), URL query and path escaping, lower- and upper-case hex, and
// the inside of a Go quoted string and of a JSON string.
func encoded(v []byte) [][]byte {
	var out [][]byte
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		out = append(out, base64Forms(v, enc)...)
	}
	s := string(v)
	out = append(out,
		[]byte(url.QueryEscape(s)),
		[]byte(url.PathEscape(s)),
		[]byte(hex.EncodeToString(v)),
		bytes.ToUpper([]byte(hex.EncodeToString(v))),
	)
	if q := strconv.Quote(s); len(q) >= 2 {
		out = append(out, []byte(q[1:len(q)-1]))
	}
	if j, err := json.Marshal(s); err == nil && len(j) >= 2 {
		out = append(out, j[1:len(j)-1])
	}
	// json.Encoder with SetEscapeHTML(false) leaves <, > and & alone, as do
	// many non-Go JSON encoders.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err == nil {
		j := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
		if len(j) >= 2 {
			out = append(out, bytes.Clone(j[1:len(j)-1]))
		}
	}
	return out
}

// base64Forms returns the forms of secret under enc that depend only on the
// secret's bytes.
//
// For each alignment k (the secret starting at byte k of a 3-byte group
// inside a longer blob) it returns the stable inner part: the characters
// whose 6 bits all come from the secret. Characters that straddle the
// secret's edges also depend on the neighbouring bytes and are left out, so
// a match never claims a byte that is not determined by the secret.
//
// It also returns the tails: the secret at the end of a blob (as in
// base64("user:" + token)), where the last character and the padding are
// determined by the secret and the end of input; for k == 0 this is the
// encoding of the secret alone, with and without padding.
func base64Forms(secret []byte, enc *base64.Encoding) [][]byte {
	var out [][]byte
	n := len(secret)
	for k := 0; k < 3; k++ {
		blob := make([]byte, k+n)
		copy(blob[k:], secret)
		padded := enc.EncodeToString(blob)
		raw := enc.WithPadding(base64.NoPadding).EncodeToString(blob)
		first := (8*k + 5) / 6 // first character whose bits all belong to the secret
		last := (8 * (k + n)) / 6
		if last > first {
			out = append(out, []byte(raw[first:last]))
		}
		if len(raw) > first {
			out = append(out, []byte(raw[first:]), []byte(padded[first:]))
		}
	}
	return out
}
