package mask

import "unicode/utf8"

// A decoding view reads the raw stream through a decoder: percent-decoding
// (viewPercent) or the escapes of JSON and Go string literals (viewEscape).
// Every view byte carries the raw positions [rs, re) it came from: a decoded
// escape's bytes all carry the whole escape.
const (
	viewPercent = iota
	viewEscape
	numViews
)

type vbyte struct {
	c      byte
	rs, re int64
}

// decoder is a streaming decoder. It holds the raw bytes of an escape it has
// not finished reading (at most 12, "\uD83D\uDE00") and emits view bytes
// into out.
type decoder struct {
	kind  uint8
	plus  bool // percent: '+' is a space
	esc   [12]byte
	n     int   // bytes in esc
	start int64 // raw position of esc[0]
	out   []vbyte
}

func hexVal(c byte) int32 {
	switch {
	case '0' <= c && c <= '9':
		return int32(c - '0')
	case 'a' <= c && c <= 'f':
		return int32(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int32(c-'A') + 10
	}
	return -1
}

func (d *decoder) emit(c byte, rs, re int64) { d.out = append(d.out, vbyte{c, rs, re}) }

func (d *decoder) emitRune(r rune, rs, re int64) {
	var b [4]byte
	n := utf8.EncodeRune(b[:], r)
	for _, c := range b[:n] {
		d.emit(c, rs, re)
	}
}

// feed reads the raw byte c at raw position r.
func (d *decoder) feed(c byte, r int64) {
	if d.kind == viewPercent {
		d.feedPercent(c, r)
	} else {
		d.feedEscape(c, r)
	}
}

// drain ends the stream: the bytes of an unfinished escape are literal.
func (d *decoder) drain() {
	for d.n > 0 {
		d.fail()
	}
}

// fail gives up the escape being read: its first byte is literal, the
// others are read again.
func (d *decoder) fail() {
	n, start := d.n, d.start
	var rest [12]byte
	copy(rest[:], d.esc[1:n])
	d.n = 0
	d.emit(d.esc[0], start, start+1)
	for i := 0; i < n-1; i++ {
		d.feed(rest[i], start+1+int64(i))
	}
}

// feedPercent: "%XX" (either case) is the byte XX; "+" is a space
// (application/x-www-form-urlencoded) if plus is set, that is when a
// pattern has a space.
func (d *decoder) feedPercent(c byte, r int64) {
	if d.n == 0 {
		switch c {
		case '%':
			d.esc[0], d.n, d.start = c, 1, r
		case '+':
			if d.plus {
				c = ' '
			}
			d.emit(c, r, r+1)
		default:
			d.emit(c, r, r+1)
		}
		return
	}
	if hexVal(c) < 0 {
		d.fail()
		d.feedPercent(c, r)
		return
	}
	if d.n == 1 {
		d.esc[1], d.n = c, 2
		return
	}
	d.n = 0
	d.emit(byte(hexVal(d.esc[1])<<4|hexVal(c)), d.start, r+1)
}

// simpleEscapes maps the byte after a backslash to its value, for the
// one-character escapes of JSON and Go.
var simpleEscapes = [256]int16{
	'"': '"', '\\': '\\', '/': '/', '\'': '\'',
	'a': 7, 'b': 8, 'f': 12, 'n': 10, 'r': 13, 't': 9, 'v': 11,
}

// feedEscape: JSON escapes (\" \\ \/ \b \f \n \r \t \uXXXX, surrogate pairs)
// and Go's (\a \v \' \xXX \NNN \UXXXXXXXX), hex digits in either case. A
// lone surrogate is U+FFFD, as encoding/json decodes it.
func (d *decoder) feedEscape(c byte, r int64) {
	if d.n == 0 {
		if c == '\\' {
			d.esc[0], d.n, d.start = c, 1, r
			return
		}
		d.emit(c, r, r+1)
		return
	}
	if d.n == 1 {
		switch {
		case c != '\\' && c != '"' && c != '/' && c != '\'' && simpleEscapes[c] != 0:
			d.n = 0
			d.emit(byte(simpleEscapes[c]), d.start, r+1)
		case c == '\\' || c == '"' || c == '/' || c == '\'':
			d.n = 0
			d.emit(c, d.start, r+1)
		case c == 'u' || c == 'U' || c == 'x' || ('0' <= c && c <= '3'):
			d.esc[1], d.n = c, 2
		default:
			d.fail()
			d.feedEscape(c, r)
		}
		return
	}
	kind := d.esc[1]
	var need int
	ok := hexVal(c) >= 0
	switch kind {
	case 'x':
		need = 4
	case 'U':
		need = 10
	case 'u':
		need = 6
		if d.n >= 6 {
			// After a high surrogate: "\u" and a low one.
			need = 12
			switch d.n {
			case 6:
				ok = c == '\\'
			case 7:
				ok = c == 'u'
			}
		}
	default: // octal
		need = 4
		ok = '0' <= c && c <= '7'
	}
	if !ok {
		if kind == 'u' && d.n >= 6 {
			d.loneHigh()
			d.feedEscape(c, r)
			return
		}
		d.fail()
		d.feedEscape(c, r)
		return
	}
	d.esc[d.n] = c
	d.n++
	if d.n < need {
		return
	}
	switch kind {
	case 'x':
		d.n = 0
		d.emit(byte(hexVal(d.esc[2])<<4|hexVal(d.esc[3])), d.start, r+1)
	case 'U':
		v := hexN(d.esc[2:10])
		if v > utf8.MaxRune || (0xD800 <= v && v < 0xE000) {
			d.fail()
			return
		}
		d.n = 0
		d.emitRune(rune(v), d.start, r+1)
	case 'u':
		if d.n == 6 {
			v := hexN(d.esc[2:6])
			if 0xD800 <= v && v < 0xDC00 {
				return // wait for the low surrogate
			}
			d.n = 0
			if 0xDC00 <= v && v < 0xE000 {
				v = utf8.RuneError
			}
			d.emitRune(rune(v), d.start, r+1)
			return
		}
		hi, lo := hexN(d.esc[2:6]), hexN(d.esc[8:12])
		if lo < 0xDC00 || lo >= 0xE000 {
			d.loneHigh()
			return
		}
		d.n = 0
		d.emitRune(rune(0x10000+(hi-0xD800)<<10+(lo-0xDC00)), d.start, r+1)
	default:
		d.n = 0
		d.emit(byte((d.esc[1]-'0')<<6|(d.esc[2]-'0')<<3|(d.esc[3]-'0')), d.start, r+1)
	}
}

// loneHigh emits U+FFFD for a high surrogate escape (the first 6 bytes of
// esc) not followed by a low one, and reads the bytes after it again.
func (d *decoder) loneHigh() {
	n, start := d.n, d.start
	var rest [12]byte
	copy(rest[:], d.esc[6:n])
	d.n = 0
	d.emitRune(utf8.RuneError, start, start+6)
	for i := 0; i < n-6; i++ {
		d.feedEscape(rest[i], start+6+int64(i))
	}
}

func hexN(b []byte) int32 {
	var v int32
	for _, c := range b {
		v = v<<4 | hexVal(c)
	}
	return v
}
