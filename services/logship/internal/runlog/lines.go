package runlog

import (
	"bytes"
	"io"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"
)

// MaxLineBytes is the longest message of one standard output line; a longer
// line is split into several messages (at a UTF-8 character boundary).
const MaxLineBytes = 64 << 10

// lineSink writes the JSON lines of every run to logship's standard output
// (Options.Stdout), one Write per line, so lines of concurrent runs never
// interleave.
type lineSink struct {
	log *slog.Logger

	mu     sync.Mutex
	w      io.Writer
	failed bool
}

func (s *lineSink) write(line []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.w.Write(line)
	switch {
	case err != nil && !s.failed:
		// The error is the writer's (a file or pipe error): it never holds
		// the line.
		s.log.Warn("writing run log lines to standard output failed; lines are dropped until it works again", "err", err)
		s.failed = true
	case err == nil && s.failed:
		s.log.Info("writing run log lines to standard output works again")
		s.failed = false
	}
}

// jsonLine is one line on standard output, as appendLine writes it (the
// reference encoding: encoding/json without HTML escaping).
type jsonLine struct {
	RunID   string `json:"run_id"`
	StackID string `json:"stack_id"`
	Time    string `json:"time"`
	Stream  string `json:"stream,omitempty"`
	Message string `json:"message"`
}

// appendLine appends the JSON of one line, newline-terminated, byte for
// byte as json.Encoder (with SetEscapeHTML(false)) encodes the jsonLine,
// without its reflection and allocations.
func appendLine(b []byte, runID, stackID string, t time.Time, stream string, msg []byte) []byte {
	b = append(b, `{"run_id":`...)
	b = appendJSONString(b, runID)
	b = append(b, `,"stack_id":`...)
	b = appendJSONString(b, stackID)
	b = append(b, `,"time":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, '"')
	if stream != "" {
		b = append(b, `,"stream":`...)
		b = appendJSONString(b, stream)
	}
	b = append(b, `,"message":`...)
	b = appendJSONString(b, msg)
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string as encoding/json does
// without HTML escaping: control characters escaped, invalid UTF-8 as
// U+FFFD, U+2028 and U+2029 escaped.
func appendJSONString[S []byte | string](b []byte, s S) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		var r rune
		var size int
		switch v := any(s[i:]).(type) {
		case string:
			r, size = utf8.DecodeRuneInString(v)
		case []byte:
			r, size = utf8.DecodeRune(v)
		}
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		} else if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
		} else {
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// lineEmitter cuts one run's masked stream into lines for lineSink. It is
// fed only committed (acknowledged) masked bytes, each exactly once; it
// holds the partial line at the end of what it was fed until its newline,
// MaxLineBytes, or flush (the end of the run).
type lineEmitter struct {
	sink           *lineSink
	runID, stackID string

	// pos is the stream position after the last byte fed; the partial line
	// starts at pos-len(partial).
	pos     int64
	partial []byte
	// Time and stream of the partial line: those of the bytes that started
	// it; the stream is dropped if bytes of another stream joined it.
	ptime   time.Time
	pstream string
	pmixed  bool

	buf []byte
}

func newLineEmitter(sink *lineSink, runID, stackID string, pos int64) *lineEmitter {
	return &lineEmitter{sink: sink, runID: runID, stackID: stackID, pos: pos}
}

// emitted returns the stream position below which every byte was written.
func (e *lineEmitter) emitted() int64 { return e.pos - int64(len(e.partial)) }

// feed takes the next committed masked bytes, which came from chunks of
// stream (or "" if several or unknown) received at t.
func (e *lineEmitter) feed(data []byte, t time.Time, stream string) {
	for len(data) > 0 {
		if len(e.partial) == 0 {
			e.ptime, e.pstream, e.pmixed = t, stream, false
		} else if stream != e.pstream {
			e.pmixed = true
		}
		if i := bytes.IndexByte(data, '\n'); i >= 0 && len(e.partial)+i <= MaxLineBytes {
			e.partial = append(e.partial, data[:i]...)
			e.pos += int64(i + 1)
			data = data[i+1:]
			e.emit(len(e.partial), true)
			continue
		}
		take := min(len(data), MaxLineBytes-len(e.partial))
		e.partial = append(e.partial, data[:take]...)
		e.pos += int64(take)
		data = data[take:]
		if len(e.partial) == MaxLineBytes {
			e.emit(runeCut(e.partial), false)
		}
	}
}

// flush writes the partial line, if any: the run's log ends.
func (e *lineEmitter) flush() {
	if len(e.partial) > 0 {
		e.emit(len(e.partial), false)
	}
}

// emit writes partial[:n] as one line and keeps the rest as the partial
// line (with the same time and stream). A line that ended with a newline
// loses a carriage return before it.
func (e *lineEmitter) emit(n int, newline bool) {
	msg := e.partial[:n]
	if newline {
		msg = bytes.TrimSuffix(msg, []byte("\r"))
	}
	stream := e.pstream
	if e.pmixed {
		stream = ""
	}
	e.buf = appendLine(e.buf[:0], e.runID, e.stackID, e.ptime, stream, msg)
	e.sink.write(e.buf)
	e.partial = append(e.partial[:0], e.partial[n:]...)
}

// runeCut returns where to split b so as not to cut a UTF-8 character in
// two: before an incomplete character at its end, else at its end.
func runeCut(b []byte) int {
	for j := len(b) - 1; j >= 0 && j >= len(b)-utf8.UTFMax; j-- {
		if utf8.RuneStart(b[j]) {
			if !utf8.FullRune(b[j:]) && j > 0 {
				return j
			}
			break
		}
	}
	return len(b)
}
