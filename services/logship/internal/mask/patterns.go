package mask

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
)

// Encoding class names, as reported in [Report.NotDerived].
const (
	EncBase64    = "base64"
	EncBase64URL = "base64url"
	EncHex       = "hex"
	EncWrapStart = "wrapped within the first 3 characters"
	EncLines     = "line by line"
)

// derived is one pattern and the encoding class it belongs to ("" for the
// value itself).
type derived struct {
	b   []byte
	enc string
	// wrap: an encoder may wrap this form into lines (the views skip
	// line breaks inside a match of it).
	wrap bool
}

// derive returns the byte strings that reveal secret when they appear in the
// log views (see the package documentation): the value and the value without
// surrounding white space, and for a multi-line value their "\r\n" forms
// and each line; the value with
// "+" read as a space (a form decoder's view of a path-escaped value); and,
// when encodings is true, the base64, base64url and hex forms of both values,
// each also without its first 3 characters (a line break the encoder put
// there is not skipped). Percent-encoding and string escapes need no
// patterns: the decoding views turn them back into the value. The result may
// contain duplicates and strings shorter than the minimum length; the caller
// filters them.
func derive(secret []byte, encodings bool) []derived {
	values := [][]byte{secret}
	if t := bytes.TrimSpace(secret); len(t) > 0 && len(t) < len(secret) {
		values = append(values, t)
	}
	var out []derived
	for _, v := range values {
		out = append(out, derived{b: v})
		if bytes.IndexByte(v, '+') >= 0 {
			out = append(out, derived{b: bytes.ReplaceAll(v, []byte("+"), []byte(" "))})
		}
	}
	if bytes.IndexByte(secret, '\n') >= 0 {
		// A terminal with ONLCR set turns every "\n" into "\r\n".
		for _, v := range values {
			out = append(out, derived{b: bytes.ReplaceAll(v, []byte("\n"), []byte("\r\n"))})
		}
		// A multi-line value (a key, a certificate) is often printed
		// or echoed line by line; each line is masked on its own.
		for line := range bytes.Lines(secret) {
			out = append(out, derived{b: bytes.TrimSpace(line), enc: EncLines})
		}
	}
	if encodings {
		for _, v := range values {
			for _, f := range encoded(v) {
				f.wrap = true
				out = append(out, f)
				// An encoder that wraps lines may break the form
				// within its first characters, before the views
				// skip breaks: the rest of the form is a pattern too.
				if len(f.b) > wrapDepth-1 {
					out = append(out, derived{b: f.b[wrapDepth-1:], enc: EncWrapStart, wrap: true})
				}
			}
		}
	}
	return out
}

// stripBreaks returns b without its '\r' and '\n' bytes.
func stripBreaks(b []byte) []byte {
	if bytes.IndexByte(b, '\n') < 0 && bytes.IndexByte(b, '\r') < 0 {
		return b
	}
	out := make([]byte, 0, len(b))
	for _, c := range b {
		if !isBreak(c) {
			out = append(out, c)
		}
	}
	return out
}

// encoded returns the wrap-tolerant encoded forms of v: base64 and base64url
// (see base64Forms), lower- and upper-case hex.
func encoded(v []byte) []derived {
	var out []derived
	for _, e := range []struct {
		enc  *base64.Encoding
		name string
	}{{base64.StdEncoding, EncBase64}, {base64.URLEncoding, EncBase64URL}} {
		for _, f := range base64Forms(v, e.enc) {
			out = append(out, derived{b: f, enc: e.name})
		}
	}
	h := []byte(hex.EncodeToString(v))
	out = append(out, derived{b: h, enc: EncHex}, derived{b: bytes.ToUpper(h), enc: EncHex})
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
			out = append(out, []byte(raw[first:]))
			if len(padded) > len(raw) {
				out = append(out, []byte(padded[first:]))
			}
		}
	}
	return out
}
