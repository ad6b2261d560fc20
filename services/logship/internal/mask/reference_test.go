package mask

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// The brute-force reference: every view built whole, every occurrence of
// every pattern found by comparison, known formats read by a separate
// implementation. It shares nothing with the writer but derive (patterns)
// and the format table.

type refByte struct {
	c      byte
	rs, re int
}

func refRaw(in []byte) []refByte {
	out := make([]refByte, len(in))
	for i, c := range in {
		out[i] = refByte{c, i, i + 1}
	}
	return out
}

func refHex(b []byte) (int, bool) {
	v := 0
	for _, c := range b {
		var d int
		switch {
		case '0' <= c && c <= '9':
			d = int(c - '0')
		case 'a' <= c && c <= 'f':
			d = int(c-'a') + 10
		case 'A' <= c && c <= 'F':
			d = int(c-'A') + 10
		default:
			return 0, false
		}
		v = v*16 + d
	}
	return v, true
}

func refPercent(in []byte, plus bool) []refByte {
	var out []refByte
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c == '%' && i+2 < len(in)+0 && i+3 <= len(in) {
			if v, ok := refHex(in[i+1 : i+3]); ok {
				out = append(out, refByte{byte(v), i, i + 3})
				i += 2
				continue
			}
		}
		if c == '+' && plus {
			c = ' '
		}
		out = append(out, refByte{c, i, i + 1})
	}
	return out
}

func refEscape(in []byte) []refByte {
	var out []refByte
	runeOut := func(r rune, s, e int) {
		var b [4]byte
		n := utf8.EncodeRune(b[:], r)
		for _, c := range b[:n] {
			out = append(out, refByte{c, s, e})
		}
	}
	simple := map[byte]byte{'"': '"', '\\': '\\', '/': '/', '\'': '\'', 'a': 7, 'b': 8, 'f': 12, 'n': 10, 'r': 13, 't': 9, 'v': 11}
	for i := 0; i < len(in); i++ {
		if in[i] != '\\' || i+1 >= len(in) {
			out = append(out, refByte{in[i], i, i + 1})
			continue
		}
		e := in[i+1]
		if v, ok := simple[e]; ok {
			out = append(out, refByte{v, i, i + 2})
			i++
			continue
		}
		switch {
		case e == 'x' && i+4 <= len(in):
			if v, ok := refHex(in[i+2 : i+4]); ok {
				out = append(out, refByte{byte(v), i, i + 4})
				i += 3
				continue
			}
		case '0' <= e && e <= '3' && i+4 <= len(in) && isOct(in[i+2]) && isOct(in[i+3]):
			out = append(out, refByte{(e-'0')<<6 | (in[i+2]-'0')<<3 | (in[i+3] - '0'), i, i + 4})
			i += 3
			continue
		case e == 'U' && i+10 <= len(in):
			if v, ok := refHex(in[i+2 : i+10]); ok && v <= utf8.MaxRune && (v < 0xD800 || v >= 0xE000) {
				runeOut(rune(v), i, i+10)
				i += 9
				continue
			}
		case e == 'u' && i+6 <= len(in):
			if v, ok := refHex(in[i+2 : i+6]); ok {
				if 0xD800 <= v && v < 0xDC00 {
					if i+12 <= len(in) && in[i+6] == '\\' && in[i+7] == 'u' {
						if lo, ok := refHex(in[i+8 : i+12]); ok && 0xDC00 <= lo && lo < 0xE000 {
							runeOut(rune(0x10000+(v-0xD800)<<10+(lo-0xDC00)), i, i+12)
							i += 11
							continue
						}
					}
					runeOut(utf8.RuneError, i, i+6)
					i += 5
					continue
				}
				if 0xDC00 <= v && v < 0xE000 {
					v = utf8.RuneError
				}
				runeOut(rune(v), i, i+6)
				i += 5
				continue
			}
		}
		out = append(out, refByte{in[i], i, i + 1})
	}
	return out
}

func isOct(c byte) bool { return '0' <= c && c <= '7' }

// refWrap applies the line-break rule to a view: a break is dropped when
// the longest suffix q of the view so far that is a prefix of a pattern (or
// anchor) is at least wrapDepth long, is a proper prefix, is a prefix of a
// wrap-tolerant pattern, and q followed by the break is no prefix.
func refWrap(view []refByte, prefixes, proper, wrapPref map[string]bool, maxLen int) []refByte {
	var kept []refByte
	var str []byte
	for _, b := range view {
		if isBreak(b.c) {
			l := 0
			for d := min(len(str), maxLen); d >= 1; d-- {
				if prefixes[string(str[len(str)-d:])] {
					l = d
					break
				}
			}
			q := string(str[len(str)-l:])
			if l >= wrapDepth && proper[q] && wrapPref[q] && !prefixes[q+string(b.c)] {
				continue
			}
		}
		kept = append(kept, b)
		str = append(str, b.c)
	}
	return kept
}

type refSpan struct{ s, e int }

// refFind returns the raw spans of the occurrences of pats in view.
func refFind(view []refByte, pats [][]byte) []refSpan {
	str := make([]byte, len(view))
	for i, b := range view {
		str[i] = b.c
	}
	var out []refSpan
	for _, p := range pats {
		for i := 0; i+len(p) <= len(str); i++ {
			if bytes.Equal(str[i:i+len(p)], p) {
				out = append(out, refSpan{view[i].rs, view[i+len(p)-1].re})
			}
		}
	}
	return out
}

// refFormat reads format f after an anchor at raw [as, ae) and returns the
// covered span, if any.
func refFormat(in []byte, f *Format, as, ae int) (refSpan, bool) {
	if f.PEM {
		rest := in[ae:]
		h := strings.Index(string(rest), "-----")
		if h < 0 || h+4 > 80 {
			if h < 0 {
				return refPEMOpen(in, as, ae, -1)
			}
			return refSpan{}, false
		}
		for _, c := range rest[:h] {
			if !(('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') || c == ' ' || c == '-') {
				return refSpan{}, false
			}
		}
		if !strings.HasSuffix(string(rest[:h+5]), "PRIVATE KEY-----") {
			return refSpan{}, false
		}
		return refPEMOpen(in, as, ae, ae+h+5)
	}
	i := ae
	if f.Context {
		for k := 0; k < 8 && i < len(in) && sepChars[in[i]]; k++ {
			i++
		}
	}
	start := i
	if !f.Context {
		start = as
	}
	j := i
	for j < len(in) && f.Value[in[j]] {
		j++
	}
	run := j - i
	if run > f.MaxLen {
		if f.Exact {
			return refSpan{}, false
		}
		run = f.MaxLen
	}
	if run < f.MinLen || bytes.Count(in[i:i+run], []byte(".")) < f.Dots {
		return refSpan{}, false
	}
	return refSpan{start, i + run}, true
}

// refPEMOpen: the header ended at body (-1: the stream ended in it).
func refPEMOpen(in []byte, as, ae, body int) (refSpan, bool) {
	if body < 0 {
		return refSpan{}, false
	}
	endAt := len(in)
	if k := strings.Index(string(in[body:]), "-----END "); k >= 0 {
		if m := strings.Index(string(in[body+k+9:]), "-----"); m >= 0 {
			endAt = body + k + 9 + m + 5
		}
	}
	endAt = min(endAt, ae+pemMaxBytes)
	return refSpan{as, endAt}, true
}

// refMask masks input as the writer should, the slow, obvious way.
func refMask(input []byte, secrets [][]byte, opts Options) ([]byte, int64) {
	cpats, _ := patterns(secrets, opts)
	pats := patternBytes(cpats)
	wrapPref := map[string]bool{}
	for _, p := range cpats {
		if p.wrap {
			for d := 1; d <= len(p.b); d++ {
				wrapPref[string(p.b[:d])] = true
			}
		}
	}
	var anchors [][]byte
	type aref struct {
		f *Format
		n int
	}
	var arefs []aref
	if !opts.DisableKnownFormats {
		for i := range KnownFormats {
			for _, a := range KnownFormats[i].Anchors {
				anchors = append(anchors, []byte(a))
				arefs = append(arefs, aref{&KnownFormats[i], len(a)})
			}
		}
	}
	prefixes, proper := map[string]bool{}, map[string]bool{}
	maxLen := 0
	plus := false
	for _, p := range append(slices2(pats), anchors...) {
		maxLen = max(maxLen, len(p))
		for d := 1; d <= len(p); d++ {
			prefixes[string(p[:d])] = true
			if d < len(p) {
				proper[string(p[:d])] = true
			}
		}
	}
	for _, p := range pats {
		if bytes.IndexByte(p, ' ') >= 0 {
			plus = true
		}
	}
	var spans []refSpan
	v0 := refWrap(refRaw(input), prefixes, proper, wrapPref, maxLen)
	spans = append(spans, refFind(v0, pats)...)
	if len(pats) > 0 {
		spans = append(spans, refFind(refWrap(refPercent(input, plus), prefixes, proper, wrapPref, maxLen), pats)...)
		spans = append(spans, refFind(refWrap(refEscape(input), prefixes, proper, wrapPref, maxLen), pats)...)
	}
	for k, a := range anchors {
		for _, sp := range refFind(v0, [][]byte{a}) {
			if fs, ok := refFormat(input, arefs[k].f, sp.s, sp.e); ok && fs.e > fs.s {
				spans = append(spans, fs)
			}
		}
	}
	covered := make([]bool, len(input))
	for _, sp := range spans {
		for j := sp.s; j < sp.e; j++ {
			covered[j] = true
		}
	}
	mask := []byte(DefaultMask)
	if opts.Mask != nil {
		mask = opts.Mask
	}
	out := []byte{}
	var masks int64
	for i := 0; i < len(input); i++ {
		if !covered[i] {
			out = append(out, input[i])
			continue
		}
		out = append(out, mask...)
		masks++
		for i+1 < len(input) && covered[i+1] {
			i++
		}
	}
	return out, masks
}

func slices2(p [][]byte) [][]byte { return append([][]byte(nil), p...) }
