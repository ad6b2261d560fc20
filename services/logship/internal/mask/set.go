// Package mask removes secret values, and well-known credentials, from a
// stream of log bytes.
//
// A [Set] is built once per run from the run's secret values. It derives the
// forms in which a job commonly prints a secret and compiles them, with the
// anchors of the well-known credential formats, into one Aho–Corasick
// automaton whose size is proportional to the total length of the patterns
// (see automaton). docs/MASKING.md lists the classes of encodings masked and
// what is out of scope.
//
// A [Writer] reads the stream through three views, all on the same
// automaton:
//
//   - the raw bytes;
//   - the bytes percent-decoded ("%2f" and "%2F" are "/", "+" is a space);
//   - the bytes with JSON and Go string escapes decoded ("\/", "\u003c",
//     "\n", "\x41", ...).
//
// In every view, a line break ('\r' or '\n') inside a match of a base64 or
// hex form is skipped once at least 4 bytes of the form are matched: an
// encoder that wraps its output into lines (base64's 76 columns, xxd's 60)
// does not hide the secret. A match in a view covers the raw bytes it was
// decoded from.
//
// The decoding views are run only from a byte that starts an escape ('%',
// '\\', and '+' when a pattern has a space) until they agree with the raw
// view again; the raw view skips, with a hashed filter of every pattern's
// first 4 bytes, the positions where no pattern can begin. Each byte of
// ordinary log text costs one filter probe.
//
// A Writer keeps its state across writes, so a secret split over any number
// of writes (down to one byte per write) is still masked. It holds back only
// the bytes that could still be the beginning of a secret ([Writer.Pending]
// says how many) and releases them as soon as they can no longer be, or
// when the stream is flushed or closed; it never releases bytes on a timer.
//
// Masking rule: a byte is covered if it lies inside any match in any view or
// inside a well-known credential. Every maximal run of covered bytes is
// replaced by one copy of the mask string; every other byte is passed
// through unchanged and in order.
package mask

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
)

// DefaultMinLength is the shortest secret value masked when
// [Options.MinLength] is zero. Shorter values would mask ordinary words.
const DefaultMinLength = 6

// DefaultMask replaces secrets when [Options.Mask] is nil.
const DefaultMask = "******"

// MaxSecretBytes is the per-run cap on the total length of the secret
// values: [Compile] refuses more, so that the compiled set's memory stays
// bounded (about 300 bytes per secret byte with encodings; see
// docs/MASKING.md). Callers should refuse such a run at intake.
const MaxSecretBytes = 256 << 10

// ErrTooManySecretBytes is returned (wrapped) by [CheckSecrets] and
// [Compile] when the secrets exceed MaxSecretBytes.
var ErrTooManySecretBytes = errors.New("secret values exceed the per-run limit")

// CheckSecrets returns an error wrapping ErrTooManySecretBytes, naming the
// total and the limit (never a value), if the secrets are longer than
// MaxSecretBytes together.
func CheckSecrets(secrets [][]byte) error {
	total := 0
	for _, s := range secrets {
		total += len(s)
	}
	if total > MaxSecretBytes {
		return fmt.Errorf("%w: %d bytes in %d secrets, at most %d", ErrTooManySecretBytes, total, len(secrets), MaxSecretBytes)
	}
	return nil
}

// Options configures a [Set]. The zero value is the recommended setting.
type Options struct {
	// MinLength is the shortest secret value, and the shortest derived
	// pattern, that is masked. Zero means DefaultMinLength.
	MinLength int
	// Mask replaces each run of covered bytes. Nil means DefaultMask.
	Mask []byte
	// DisableEncodings masks only the values as they are (and their
	// trimmed and line-by-line forms, in the three views), not their
	// base64 and hex forms.
	DisableEncodings bool
	// DisableKnownFormats turns off the masking of well-known credential
	// formats ([KnownFormats]) that were not declared as secrets.
	DisableKnownFormats bool
}

// Report describes how a [Set] was built. It never contains secret values.
type Report struct {
	// TooShort lists, in increasing order, the indexes of the secrets that
	// are not masked because they are shorter than MinLength. The caller
	// should tell the run's log their names.
	TooShort []int
	// NotDerived lists, for the secrets that are masked, the encoding
	// classes of which at least one form was too short to be masked
	// (such a secret is then not masked in that form).
	NotDerived []NotDerived
	// Patterns is the number of distinct byte strings searched for.
	Patterns int
	// States is the number of automaton states.
	States int
	// TableBytes is the memory the compiled set holds.
	TableBytes int
}

// NotDerived names the encoding classes not derived for one secret.
type NotDerived struct {
	Secret    int
	Encodings []string
}

// Set is a compiled set of secrets. It is immutable and safe for concurrent
// use by all the writers of a run.
type Set struct {
	a         *automaton
	filt      *filter   // nil: no skipping (a pattern shorter than 4 bytes)
	stop      [256]bool // the bytes that start a decoding view: stopBytes
	stopBytes []byte
	plus      bool // '+' starts the percent view (a pattern has a space)
	mask      []byte
	anchors   []anchorRef
	formats   []Format
}

// Compile checks secrets against MaxSecretBytes and compiles them.
func Compile(secrets [][]byte, opts Options) (*Set, Report, error) {
	if err := CheckSecrets(secrets); err != nil {
		return nil, Report{}, err
	}
	set, rep := NewSet(secrets, opts)
	return set, rep, nil
}

// NewSet compiles secrets into a Set, without the MaxSecretBytes check (see
// [Compile]). Secrets shorter than the minimum length are skipped and listed
// in the report; patterns derived from the others that are shorter than the
// minimum length are dropped and their classes reported. NewSet keeps no
// reference to secrets.
func NewSet(secrets [][]byte, opts Options) (*Set, Report) {
	pats, rep := patterns(secrets, opts)
	set := &Set{mask: []byte(DefaultMask)}
	if opts.Mask != nil {
		set.mask = bytes.Clone(opts.Mask)
	}
	var anchors [][]byte
	if !opts.DisableKnownFormats {
		set.formats = KnownFormats
		for fi, f := range set.formats {
			for _, an := range f.Anchors {
				anchors = append(anchors, []byte(an))
				set.anchors = append(set.anchors, anchorRef{format: fi, len: len(an)})
			}
		}
	}
	set.a = buildAutomaton(pats, anchors)
	if set.a.minLen >= 4 {
		set.filt = newFilter(filterKeys(pats, anchors, set.anchors, set.formats))
	}
	if len(pats) > 0 {
		set.stopBytes = []byte{'%', '\\'}
	}
	for _, p := range pats {
		if bytes.IndexByte(p.b, ' ') >= 0 {
			set.plus = true
			set.stopBytes = append(set.stopBytes, '+')
			break
		}
	}
	for _, c := range set.stopBytes {
		set.stop[c] = true
	}
	rep.Patterns = len(pats)
	rep.States = len(set.a.depth)
	rep.TableBytes = set.a.bytes()
	if set.filt != nil {
		rep.TableBytes += 8 * len(set.filt.bits)
	}
	return set, rep
}

// pattern is a compiled pattern; wrap: line breaks inside a match are
// skipped.
type pattern struct {
	b    []byte
	wrap bool
}

// patterns returns the distinct patterns derived from secrets that are at
// least the minimum length, and the report of skipped secrets and forms.
func patterns(secrets [][]byte, opts Options) ([]pattern, Report) {
	minLen := opts.MinLength
	if minLen <= 0 {
		minLen = DefaultMinLength
	}
	var rep Report
	var pats []pattern
	seen := make(map[string]int) // pattern → index + 1
	for i, s := range secrets {
		if len(s) < minLen {
			rep.TooShort = append(rep.TooShort, i)
			continue
		}
		var short []string
		for _, d := range derive(s, !opts.DisableEncodings) {
			if len(d.b) < minLen {
				if d.enc != "" && !slices.Contains(short, d.enc) {
					short = append(short, d.enc)
				}
				continue
			}
			if k := seen[string(d.b)]; k > 0 {
				if d.wrap {
					pats[k-1].wrap = true
				}
				continue
			}
			pats = append(pats, pattern{b: bytes.Clone(d.b), wrap: d.wrap})
			seen[string(d.b)] = len(pats)
		}
		if opts.DisableEncodings {
			short = append(short, EncBase64, EncBase64URL, EncHex)
		}
		if len(short) > 0 {
			rep.NotDerived = append(rep.NotDerived, NotDerived{Secret: i, Encodings: short})
		}
	}
	return pats, rep
}

// filterKeys returns the 4-byte strings of the skip filter (see filter) and
// its stride: 2 when every pattern has at least 5 bytes, else 1.
func filterKeys(pats []pattern, anchors [][]byte, refs []anchorRef, formats []Format) ([][]byte, int) {
	stride := 2
	for _, p := range pats {
		if len(p.b) < 5 {
			stride = 1
		}
	}
	keys := make([][]byte, 0, stride*(len(pats)+len(anchors)))
	for _, p := range pats {
		keys = append(keys, p.b[:4])
		if stride == 2 {
			keys = append(keys, p.b[1:5])
			if p.wrap {
				// A line break may follow the first 4 bytes.
				keys = append(keys, append(bytes.Clone(p.b[1:4]), '\n'), append(bytes.Clone(p.b[1:4]), '\r'))
			}
		}
	}
	for i, an := range anchors {
		keys = append(keys, an[:4])
		if stride == 1 {
			continue
		}
		if len(an) >= 5 {
			keys = append(keys, an[1:5])
			continue
		}
		// A 4-byte anchor is found one byte in only with the byte after
		// it: any byte of its value.
		f := &formats[refs[i].format]
		for c := range 256 {
			if f.Value != nil && f.Value[c] || f.Context && sepChars[c] {
				keys = append(keys, append(bytes.Clone(an[1:4]), byte(c)))
			}
		}
	}
	return keys, stride
}
