// Package envconfig reads a service's configuration from environment
// variables, strictly.
//
// A Reader accumulates one error per bad variable, each naming the variable
// and saying what is wrong, so that a service can report every mistake at once
// and refuse to start:
//
//	r := envconfig.FromOS()
//	timeout := r.Duration("HANGAR_RUN_TIMEOUT", 70*time.Minute)
//	key := r.Base64("HANGAR_POOL_PRIVATE_KEY")
//	r.RejectUnknown("HANGAR_")
//	if err := r.Err(); err != nil {
//		return fmt.Errorf("load config: %w", err)
//	}
//
// A variable that is set to the empty string (or only whitespace) counts as
// not set, so that compose files and Kubernetes manifests can blank an option
// to get its default. Getters return their default (or the zero value) when
// the variable is unset or invalid; callers must check Err before using the
// results.
//
// Values never appear in the errors of Secret and Base64, which are meant for
// keys and tokens. Other getters quote the offending value, which is what an
// operator needs to fix a typo.
package envconfig

import (
	"encoding/base64"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Reader reads and validates environment variables. It is not safe for
// concurrent use; configuration is loaded once, at start.
type Reader struct {
	lookup  func(string) (string, bool)
	environ func() []string
	errs    []error
	// read records every variable name asked for and every prefix given to
	// Prefixed, for RejectUnknown.
	read     map[string]bool
	prefixes []string
}

// Option configures a Reader.
type Option func(*Reader)

// WithEnviron gives the Reader a way to list the environment as "KEY=value"
// strings (os.Environ in a main). Prefixed and RejectUnknown need it.
func WithEnviron(environ func() []string) Option {
	return func(r *Reader) { r.environ = environ }
}

// New returns a Reader that looks variables up with lookup (os.LookupEnv in a
// main, a map in tests).
func New(lookup func(string) (string, bool), opts ...Option) *Reader {
	r := &Reader{lookup: lookup, read: map[string]bool{}}
	for _, o := range opts {
		o(r)
	}
	return r
}

// FromMap returns a Reader over a fixed set of variables, listing included.
func FromMap(env map[string]string) *Reader {
	m := maps.Clone(env)
	return New(func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}, WithEnviron(func() []string {
		out := make([]string, 0, len(m))
		for k, v := range m {
			out = append(out, k+"="+v)
		}
		return out
	}))
}

// Err returns every error recorded so far, joined in call order, or nil.
func (r *Reader) Err() error {
	return errors.Join(r.errs...)
}

func (r *Reader) fail(name, format string, args ...any) {
	r.errs = append(r.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
}

// get returns the variable's value with surrounding whitespace kept, and
// whether it is set to something other than blanks.
func (r *Reader) get(name string) (string, bool) {
	r.read[name] = true
	v, ok := r.lookup(name)
	if !ok || strings.TrimSpace(v) == "" {
		return "", false
	}
	return v, true
}

// String returns the variable's value as written, or def when unset.
func (r *Reader) String(name, def string) string {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	return v
}

// Required returns the variable's value as written, recording
// "NAME: required but not set" when it is unset or blank.
func (r *Reader) Required(name string) string {
	v, ok := r.get(name)
	if !ok {
		r.fail(name, "required but not set")
		return ""
	}
	return v
}

// Secret is Required for a variable that holds a secret (a token, a key, a
// password). It exists so that the call site says so: its errors never
// include the value, and neither may the caller's.
func (r *Reader) Secret(name string) string {
	return r.Required(name)
}

// SecretOrFile is Secret for a variable that may instead be given as a file:
// NAME holds the value, or NAME_FILE names a file holding it (as Docker and
// Kubernetes secrets are mounted). Setting both is an error; surrounding
// whitespace of the file's content is trimmed.
func (r *Reader) SecretOrFile(name string) string {
	v, ok := r.get(name)
	path, fromFile := r.get(name + "_FILE")
	switch {
	case ok && fromFile:
		r.fail(name, "set either %s or %s_FILE, not both", name, name)
		return ""
	case ok:
		return v
	case fromFile:
		b, err := os.ReadFile(path)
		if err != nil {
			r.fail(name+"_FILE", "cannot read %s: %v", path, errors.Unwrap(err))
			return ""
		}
		v := strings.TrimSpace(string(b))
		if v == "" {
			r.fail(name+"_FILE", "%s is empty", path)
		}
		return v
	}
	r.fail(name, "required but not set (or set %s_FILE to a file holding it)", name)
	return ""
}

// Duration returns the variable parsed as a Go duration ("90s", "70m",
// "1h30m"), or def when unset. The duration must be positive.
func (r *Reader) Duration(name string, def time.Duration) time.Duration {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	d, err := ParseDuration(v)
	if err != nil {
		r.fail(name, "%v", err)
		return def
	}
	return d
}

// ParseDuration parses a positive Go duration, surrounded by optional
// whitespace, with the error wording Reader.Duration uses.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (use Go syntax such as 90s or 70m)", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("duration %q must be positive", s)
	}
	return d, nil
}

// Int returns the variable parsed as a base-10 integer in [min, max], or def
// when unset.
func (r *Reader) Int(name string, def, min, max int) int {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		r.fail(name, "invalid integer %q", v)
		return def
	}
	if n < min || n > max {
		r.fail(name, "%d out of range [%d, %d]", n, min, max)
		return def
	}
	return n
}

// Float returns the variable parsed as a finite decimal number in
// [min, max], or def when unset.
func (r *Reader) Float(name string, def, min, max float64) float64 {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		r.fail(name, "invalid number %q", v)
		return def
	}
	if f < min || f > max {
		r.fail(name, "%v out of range [%v, %v]", f, min, max)
		return def
	}
	return f
}

// Bool returns the variable parsed as a boolean, or def when unset. Only
// true, false, 1 and 0 are accepted.
func (r *Reader) Bool(name string, def bool) bool {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	switch strings.TrimSpace(v) {
	case "true", "1":
		return true
	case "false", "0":
		return false
	}
	r.fail(name, "invalid boolean %q (use true, false, 1 or 0)", v)
	return def
}

// List returns the variable split on commas, each item trimmed, empty items
// dropped; nil when unset.
func (r *Reader) List(name string) []string {
	v, ok := r.get(name)
	if !ok {
		return nil
	}
	var out []string
	for item := range strings.SplitSeq(v, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// OneOf returns the variable's trimmed value, which must be one of allowed,
// or def when unset.
func (r *Reader) OneOf(name, def string, allowed ...string) string {
	v, ok := r.get(name)
	if !ok {
		return def
	}
	t := strings.TrimSpace(v)
	if !slices.Contains(allowed, t) {
		r.fail(name, "invalid value %q (allowed: %s)", v, strings.Join(allowed, ", "))
		return def
	}
	return t
}

// Base64 returns the variable decoded from base64, standard or URL alphabet,
// padded or not; whitespace anywhere in the value (such as the line breaks
// of `base64` without -w0) is ignored. The variable is required. Errors never
// include the value.
func (r *Reader) Base64(name string) []byte {
	v, ok := r.get(name)
	if !ok {
		r.fail(name, "required but not set")
		return nil
	}
	b, err := DecodeBase64(v)
	if err != nil {
		r.errs = append(r.errs, fmt.Errorf("%s: %w", name, err))
		return nil
	}
	return b
}

// DecodeBase64 decodes s as Base64 does. Its error never includes s.
func DecodeBase64(s string) ([]byte, error) {
	s = strings.Join(strings.Fields(s), "")
	enc := base64.StdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.URLEncoding
	}
	if !strings.HasSuffix(s, "=") {
		enc = enc.WithPadding(base64.NoPadding)
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return nil, fmt.Errorf("invalid base64 (bad data at byte %d; value not shown)", int64(ce))
		}
		return nil, errors.New("invalid base64 (value not shown)")
	}
	return b, nil
}

// Prefixed returns every variable whose name starts with prefix, keyed by
// the rest of the name as written: with HANGAR_METADATA_zone=a,
// Prefixed("HANGAR_METADATA_") returns {"zone": "a"}. Values are kept as
// written, empty ones included. The Reader must have been built with
// WithEnviron (or FromMap, FromOS).
func (r *Reader) Prefixed(prefix string) map[string]string {
	r.prefixes = append(r.prefixes, prefix)
	if r.environ == nil {
		r.fail(prefix+"*", "cannot list variables: envconfig.Reader built without WithEnviron")
		return nil
	}
	out := map[string]string{}
	for _, kv := range r.environ() {
		k, v, _ := strings.Cut(kv, "=")
		key, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		if key == "" {
			r.fail(k, "empty key after prefix %s", prefix)
			continue
		}
		out[key] = v
	}
	return out
}

// RejectUnknown records an error for each set variable whose name starts
// with prefix but that no getter of this Reader has asked for (and no
// Prefixed prefix covers): a typo such as HANGAR_RUN_TIMOUT fails instead of
// being silently ignored. Call it after every getter. The Reader must have
// been built with WithEnviron (or FromMap, FromOS).
func (r *Reader) RejectUnknown(prefix string) {
	if r.environ == nil {
		r.fail(prefix+"*", "cannot list variables: envconfig.Reader built without WithEnviron")
		return
	}
	var unknown []string
	for _, kv := range r.environ() {
		k, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(k, prefix) || r.read[k] {
			continue
		}
		if slices.ContainsFunc(r.prefixes, func(p string) bool { return strings.HasPrefix(k, p) }) {
			continue
		}
		unknown = append(unknown, k)
	}
	slices.Sort(unknown)
	for _, k := range slices.Compact(unknown) {
		r.fail(k, "unknown variable (misspelt, or not used by this service)")
	}
}

// Addr returns a network address (host:port; the host may be empty, e.g.
// ":7300" to listen on every interface) or def when unset, recording
// "NAME: ..." when it is not one: a missing or non-numeric port, a port out
// of range, or a URL where an address is expected. A gRPC target with a
// scheme ("dns:///host:port", "unix:///path") is returned as is.
func (r *Reader) Addr(name, def string) string {
	v := r.String(name, def)
	if v == "" || strings.HasPrefix(v, "unix:") || strings.HasPrefix(v, "dns:") {
		return v
	}
	if err := checkAddr(v); err != nil {
		r.fail(name, "%q is not a network address host:port (%v)", v, err)
	}
	return v
}

func checkAddr(v string) error {
	if strings.Contains(v, "://") {
		return errors.New("a URL; give host:port without a scheme")
	}
	host, port, err := net.SplitHostPort(v)
	if err != nil {
		return err
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("bad host %q", host)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 0 to 65535", port)
	}
	return nil
}

// ExistingDir returns a directory that must exist (def when unset),
// recording "NAME: ..." when it does not or is not a directory.
func (r *Reader) ExistingDir(name, def string) string {
	return r.dir(name, def, false)
}

// StateDir returns a directory the service keeps its state in (def when
// unset): created (0700, with its parents) when missing, recording
// "NAME: ..." when it cannot be, or when the path is a file.
func (r *Reader) StateDir(name, def string) string {
	return r.dir(name, def, true)
}

// dir is ExistingDir, or StateDir with create.
func (r *Reader) dir(name, def string, create bool) string {
	v := r.String(name, def)
	if v == "" {
		return v
	}
	st, err := os.Stat(v)
	switch {
	case errors.Is(err, os.ErrNotExist) && create:
		if err := os.MkdirAll(v, 0o700); err != nil {
			r.fail(name, "cannot create directory %s: %v", v, err)
		}
	case errors.Is(err, os.ErrNotExist):
		r.fail(name, "directory %s does not exist (create it, or point %s at one that does)", v, name)
	case err != nil:
		r.fail(name, "%v", err)
	case !st.IsDir():
		r.fail(name, "%s is not a directory", v)
	}
	return v
}

// ExistingFile returns the path of a file that must exist and be readable
// (def when unset), recording "NAME: ..." when it is not.
func (r *Reader) ExistingFile(name, def string) string {
	v := r.String(name, def)
	if v == "" {
		return v
	}
	f, err := os.Open(v)
	if err != nil {
		r.fail(name, "cannot read %s: %v", v, errors.Unwrap(err))
		return v
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		r.fail(name, "%s is a directory, not a file", v)
	}
	return v
}
