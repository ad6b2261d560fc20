package mask

// Well-known credential formats, masked whether declared or not (see
// docs/MASKING.md for the list and each format's source).
//
// A format is found by an anchor, a fixed string the automaton looks for
// (such as "ghp_"); a scanner then reads the bytes after it. Scanners read
// the raw stream.

// charClass is a set of bytes.
type charClass [256]bool

func classOf(ranges ...string) *charClass {
	var c charClass
	for _, r := range ranges {
		if len(r) == 3 && r[1] == '-' {
			for b := int(r[0]); b <= int(r[2]); b++ {
				c[b] = true
			}
			continue
		}
		for i := 0; i < len(r); i++ {
			c[r[i]] = true
		}
	}
	return &c
}

var (
	alnum      = classOf("A-Z", "a-z", "0-9")
	alnumUnder = classOf("A-Z", "a-z", "0-9", "_")
	alnumDash  = classOf("A-Z", "a-z", "0-9", "-")
	urlSafe    = classOf("A-Z", "a-z", "0-9", "-", "_")
	upperDigit = classOf("A-Z", "0-9")
	b64Std     = classOf("A-Z", "a-z", "0-9", "+/")
	slackPath  = classOf("A-Z", "a-z", "0-9", "/")
	jwtChars   = classOf("A-Z", "a-z", "0-9", "-", "_", ".")
	sepChars   = classOf(" \t:=\"'")
)

// Format describes a well-known credential format.
type Format struct {
	// Name names the format in documentation and reports.
	Name string
	// Anchors are the fixed strings that start it.
	Anchors []string
	// Value is the class of the bytes after the anchor (and separators);
	// MinLen and MaxLen bound their number.
	Value          *charClass
	MinLen, MaxLen int
	// Exact: the value must be followed by a byte outside Value (or the
	// end of the stream); a longer run is not this format.
	Exact bool
	// Context: the anchor is a name (kept in clear) and up to 8 separator
	// bytes (space, tab, ':', '=', quotes) come before the value; only
	// the value is masked. Otherwise the anchor is masked with the value.
	Context bool
	// Dots is the number of '.' the value must contain at least (JWT).
	Dots int
	// PEM: the anchor begins a "-----BEGIN ... PRIVATE KEY-----" block,
	// masked whole up to its "-----END ...-----" line.
	PEM bool
}

// pemMaxBytes bounds a private-key block: one that has not ended after so
// many bytes is masked up to there.
const pemMaxBytes = 1 << 20

// KnownFormats is the list of well-known credential formats masked unless
// [Options.DisableKnownFormats] is set.
var KnownFormats = []Format{
	{Name: "GitHub token", Anchors: []string{"ghp_", "gho_", "ghu_", "ghs_", "ghr_"}, Value: alnum, MinLen: 36, MaxLen: 251},
	{Name: "GitHub fine-grained token", Anchors: []string{"github_pat_"}, Value: alnumUnder, MinLen: 22, MaxLen: 244},
	{Name: "GitLab token", Anchors: []string{"glpat-", "gldt-", "glrt-", "glptt-", "glcbt-", "gloas-"}, Value: urlSafe, MinLen: 20, MaxLen: 250},
	{Name: "AWS access key ID", Anchors: []string{"AKIA", "ASIA"}, Value: upperDigit, MinLen: 16, MaxLen: 16, Exact: true},
	{Name: "AWS secret access key", Anchors: []string{"secret_access_key", "SECRET_ACCESS_KEY", "SecretAccessKey"},
		Value: b64Std, MinLen: 40, MaxLen: 40, Exact: true, Context: true},
	{Name: "Slack token", Anchors: []string{"xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-", "xoxe-"}, Value: alnumDash, MinLen: 10, MaxLen: 250},
	{Name: "Slack webhook", Anchors: []string{"hooks.slack.com/services/", "hooks.slack.com/workflows/"}, Value: slackPath, MinLen: 20, MaxLen: 200, Context: true},
	{Name: "Google API key", Anchors: []string{"AIza"}, Value: urlSafe, MinLen: 35, MaxLen: 35, Exact: true},
	{Name: "Stripe key", Anchors: []string{"sk_live_", "rk_live_", "sk_test_", "rk_test_"}, Value: alnum, MinLen: 24, MaxLen: 247},
	{Name: "JSON Web Token", Anchors: []string{"eyJhbGci", "eyJ0eXAi", "eyJraWQi", "eyJ0eXBlIj"}, Value: jwtChars, MinLen: 20, MaxLen: 16 << 10, Dots: 2},
	{Name: "private key (PEM)", Anchors: []string{"-----BEGIN "}, PEM: true},
}

// anchorRef is an anchor of the compiled set: its format and length.
type anchorRef struct {
	format int
	len    int
}

// scanner reads the bytes after an anchor.
type scanner struct {
	f     *Format
	start int64 // first covered raw position
	// anchor is the anchor's first raw position: held while the scanner
	// reads, so that the writer is not clean (Pending > 0) in the middle of
	// a format, even between a context's name and its value.
	anchor int64
	phase  uint8
	n      int // value bytes (or, for PEM, bytes since start)
	seps   int
	dots   int
	tail   [16]byte // PEM: the last bytes of the current line
	tn     int
}

const (
	phaseSep = iota
	phaseValue
	pemHeader
	pemBody
	pemEnd
)

func newScanner(f *Format, anchorStart, anchorEnd int64) scanner {
	sc := scanner{f: f, start: anchorStart, anchor: anchorStart, phase: phaseValue}
	switch {
	case f.PEM:
		sc.phase = pemHeader
	case f.Context:
		sc.phase, sc.start = phaseSep, anchorEnd
	}
	return sc
}

// feed reads the raw byte c at raw position r. It returns whether the
// scanner is done, and if so the covered span [start, end) (end == 0: none).
func (sc *scanner) feed(c byte, r int64) (done bool, end int64) {
	f := sc.f
	switch sc.phase {
	case phaseSep:
		if sepChars[c] && sc.seps < 8 {
			sc.seps++
			sc.start = r + 1
			return false, 0
		}
		sc.phase = phaseValue
		fallthrough
	case phaseValue:
		if f.Value[c] {
			if sc.n == f.MaxLen {
				if f.Exact {
					return true, 0
				}
				return sc.end(r)
			}
			sc.n++
			if c == '.' {
				sc.dots++
			}
			return false, 0
		}
		return sc.end(r)
	}
	// PEM
	sc.n++
	if sc.n > pemMaxBytes {
		return true, r
	}
	if c == '\n' || c == '\r' {
		if sc.phase == pemHeader {
			return true, 0 // no "PRIVATE KEY-----" on the BEGIN line
		}
		sc.tn = 0
		return false, 0
	}
	if sc.tn == len(sc.tail) {
		copy(sc.tail[:], sc.tail[1:])
		sc.tn--
	}
	sc.tail[sc.tn] = c
	sc.tn++
	t := string(sc.tail[:sc.tn])
	switch sc.phase {
	case pemHeader:
		if hasSuffix(t, "-----") {
			if !hasSuffix(t, "PRIVATE KEY-----") {
				return true, 0
			}
			sc.phase, sc.tn = pemBody, 0
		} else if !(('A' <= c && c <= 'Z') || ('0' <= c && c <= '9') || c == ' ' || c == '-') || sc.n > 80 {
			return true, 0
		}
	case pemBody:
		if t == "-----END " || hasSuffix(t, "-----END ") {
			sc.phase, sc.tn = pemEnd, 0
		}
	case pemEnd:
		if hasSuffix(t, "-----") {
			return true, r + 1
		}
	}
	return false, 0
}

// end is called on the first byte after the value (or the end of the
// stream, r being the stream's end).
func (sc *scanner) end(r int64) (bool, int64) {
	if sc.phase == phaseValue && sc.n >= sc.f.MinLen && sc.dots >= sc.f.Dots {
		return true, r
	}
	return true, 0
}

// close ends the scanner at the end of the stream, at position r.
func (sc *scanner) close(r int64) int64 {
	if sc.f.PEM {
		if sc.phase == pemHeader {
			return 0
		}
		return r // an unfinished key block is masked
	}
	_, end := sc.end(r)
	return end
}

func hasSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}
