// Package workspace prepares a run's workspace on the executor's host: a fresh
// directory holding the run's source, fetched with git.
//
// Source fetching (RunSpec.source):
//   - an empty url gives an empty workspace;
//   - a ref that looks like a commit (7 to 64 hexadecimal digits) is fetched with
//     the whole history and checked out detached, since servers need not serve a
//     single commit by id; a branch whose name is only hex digits is therefore
//     taken as a commit;
//   - any other ref (a branch or a tag; "refs/heads/" and "refs/tags/" prefixes
//     are accepted) and the empty ref (the remote's default branch) are cloned
//     with depth 1.
//
// Only http, https, ssh and git URLs (and scp-like "user@host:path") are fetched;
// local paths, file:// and git's ext:: transports are refused, since the URL
// comes from the control plane.
//
// Private VCS mapping: when the host of an http(s) source URL equals a mapping
// name (HANGAR_PRIVATEVCS_MAPPING_NAME_<n>, compared without regard to case), the
// URL is rewritten to the mapping's base endpoint (HANGAR_PRIVATEVCS_MAPPING_
// BASE_ENDPOINT_<n>) followed by the URL's path: with the mapping
// "vcs-internal" → "http://10.0.0.5:8080/git", the source
// "https://vcs-internal/acme/infra.git" is fetched from
// "http://10.0.0.5:8080/git/acme/infra.git". The base endpoint's scheme replaces
// the URL's; credentials in the URL are kept.
//
// Credentials: the user and password of an http(s) URL are never put on git's
// command line (where other users of the host could see them in the process
// list) nor into the clone's .git/config: git gets them as an Authorization
// header through its environment (GIT_CONFIG_*), scoped to the source's host.
// Every URL in errors and progress output has its userinfo replaced by "***", and
// git's output has the password removed.
//
// git runs with GIT_TERMINAL_PROMPT=0 (and ssh in batch mode unless
// GIT_SSH_COMMAND is set) so that it never waits for input, with stdin from
// /dev/null, and with the executor's environment minus its HANGAR_* variables.
package workspace

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"

	runv1 "github.com/hangar-dev/hangar/gen/go/hangar/run/v1"
)

// Environment variable prefixes of the private VCS mappings.
const (
	MappingNamePrefix     = "HANGAR_PRIVATEVCS_MAPPING_NAME_"
	MappingEndpointPrefix = "HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_"
)

// Options configure Prepare.
type Options struct {
	// BaseDir is where workspaces are created; default os.TempDir().
	BaseDir string
	// Owner, when set, is part of every workspace's name
	// ("hangar-ws-<owner>-…"), so that RemoveStale can find the workspaces a
	// process of that owner left behind.
	Owner string
	// VCSMappings maps a private VCS pool name to its base endpoint URL (see
	// ParseVCSMappings).
	VCSMappings map[string]string
	// GitBinary is the git executable; default "git" (looked up in PATH).
	GitBinary string
	// Stdout and Stderr receive progress lines of the fetch ("Fetching …",
	// git's own "Cloning into …"), line by line, with credentials removed. They
	// may be written from two goroutines at once. Nil discards them.
	Stdout, Stderr io.Writer
}

// Workspace is a prepared workspace.
type Workspace struct {
	// Dir is the workspace directory, holding the source.
	Dir string
	// Root is Dir/<project_root>, where the phases run; it is inside Dir, also
	// after resolving symbolic links.
	Root string
	// Commit is the checked-out commit, empty for an empty source.
	Commit string
}

// Remove deletes the workspace, also files and directories a run made
// read-only.
func (w *Workspace) Remove() error {
	if err := os.RemoveAll(w.Dir); err == nil {
		return nil
	}
	// Make every directory writable, then try again.
	_ = filepath.WalkDir(w.Dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(path, 0o700)
		}
		return nil
	})
	if err := os.RemoveAll(w.Dir); err != nil {
		return fmt.Errorf("remove workspace: %w", err)
	}
	return nil
}

// ParseVCSMappings reads the private VCS mappings from an environment:
// every HANGAR_PRIVATEVCS_MAPPING_NAME_<n> needs a
// HANGAR_PRIVATEVCS_MAPPING_BASE_ENDPOINT_<n> with the same non-empty suffix <n>
// and the other way round. The endpoint must be an absolute http or https URL
// without query or fragment; a trailing slash is dropped. Names must be unique
// (without regard to case). Errors name the variable at fault.
func ParseVCSMappings(environ map[string]string) (map[string]string, error) {
	names := map[string]string{}     // suffix -> name
	endpoints := map[string]string{} // suffix -> endpoint
	for k, v := range environ {
		if n, ok := strings.CutPrefix(k, MappingNamePrefix); ok {
			names[n] = v
		} else if n, ok := strings.CutPrefix(k, MappingEndpointPrefix); ok {
			endpoints[n] = v
		}
	}
	suffixes := make([]string, 0, len(names)+len(endpoints))
	for n := range names {
		suffixes = append(suffixes, n)
	}
	for n := range endpoints {
		if _, ok := names[n]; !ok {
			suffixes = append(suffixes, n)
		}
	}
	sort.Strings(suffixes) // errors are deterministic

	out := make(map[string]string, len(names))
	seen := map[string]string{} // lower-case name -> variable
	for _, n := range suffixes {
		nameVar, endpointVar := MappingNamePrefix+n, MappingEndpointPrefix+n
		name, hasName := names[n]
		endpoint, hasEndpoint := endpoints[n]
		switch {
		case n == "" && hasName:
			return nil, fmt.Errorf("%s: the variable needs a suffix, e.g. %s1", nameVar, MappingNamePrefix)
		case n == "":
			return nil, fmt.Errorf("%s: the variable needs a suffix, e.g. %s1", endpointVar, MappingEndpointPrefix)
		case !hasEndpoint:
			return nil, fmt.Errorf("%s: no matching %s", nameVar, endpointVar)
		case !hasName:
			return nil, fmt.Errorf("%s: no matching %s", endpointVar, nameVar)
		}
		if err := validMappingName(name); err != nil {
			return nil, fmt.Errorf("%s: %w", nameVar, err)
		}
		if prev, ok := seen[strings.ToLower(name)]; ok {
			return nil, fmt.Errorf("%s: name %q is already mapped by %s", nameVar, name, prev)
		}
		seen[strings.ToLower(name)] = nameVar
		base, err := parseEndpoint(endpoint)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", endpointVar, err)
		}
		out[name] = base
	}
	return out, nil
}

func validMappingName(name string) error {
	if name == "" {
		return errors.New("empty name")
	}
	if strings.ContainsAny(name, "/@?# \t\n") {
		return fmt.Errorf("name %q is not a host name", name)
	}
	return nil
}

func parseEndpoint(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("base endpoint is not a URL: %w", parseErr(err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("base endpoint %q must be an http or https URL", redactURL(s))
	}
	if u.Host == "" {
		return "", fmt.Errorf("base endpoint %q has no host", redactURL(s))
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("base endpoint %q must not have a query or fragment", redactURL(s))
	}
	return strings.TrimSuffix(s, "/"), nil
}

// commitRef matches a ref taken as a commit id (SHA-1 or SHA-256, full or
// abbreviated).
var commitRef = regexp.MustCompile(`^[0-9a-fA-F]{7,64}$`)

// Prepare creates a workspace for spec under opts.BaseDir and fetches the
// source into it (see the package documentation). On error nothing is left
// behind. Cancelling ctx kills git.
func Prepare(ctx context.Context, spec *runv1.RunSpec, opts Options) (*Workspace, error) {
	src := spec.GetSource()
	root := src.GetProjectRoot()
	if root != "" && !filepath.IsLocal(filepath.FromSlash(root)) {
		return nil, fmt.Errorf("prepare workspace: project_root %q is not a path inside the repository", root)
	}
	base := opts.BaseDir
	if base == "" {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, namePrefix(opts.Owner))
	if err != nil {
		return nil, fmt.Errorf("prepare workspace: %w", err)
	}
	ws := &Workspace{Dir: dir, Root: filepath.Join(dir, filepath.FromSlash(root))}
	if err := ws.fill(ctx, src, opts); err != nil {
		_ = ws.Remove()
		return nil, fmt.Errorf("prepare workspace: %w", err)
	}
	return ws, nil
}

func namePrefix(owner string) string {
	if owner == "" {
		return "hangar-ws-"
	}
	clean := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, owner)
	return "hangar-ws-" + clean + "-"
}

// RemoveStale removes the workspaces of owner left in baseDir by a process
// that died in the middle of its runs. Call it before the owner starts runs.
func RemoveStale(baseDir, owner string) ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(baseDir, namePrefix(owner)+"*"))
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, m := range matches {
		if err := (&Workspace{Dir: m}).Remove(); err != nil {
			errs = append(errs, err)
		}
	}
	return matches, errors.Join(errs...)
}

func (ws *Workspace) fill(ctx context.Context, src *runv1.Source, opts Options) error {
	if src.GetUrl() == "" {
		if err := os.MkdirAll(ws.Root, 0o755); err != nil {
			return fmt.Errorf("create project root: %w", err)
		}
		return nil
	}
	target, err := resolveURL(src.GetUrl(), opts.VCSMappings)
	if err != nil {
		return err
	}
	g := &git{
		hostDir: ws.Dir,
		bin:     opts.GitBinary,
		stdout:  orDiscard(opts.Stdout),
		stderr:  orDiscard(opts.Stderr),
		env:     gitEnv(os.Environ(), target),
	}
	switch {
	case target.password != "":
		g.secrets = []string{target.password, basicToken(target)}
	case target.user != "": // a token given as the user name
		g.secrets = []string{target.user, basicToken(target)}
	}
	if g.bin == "" {
		g.bin = "git"
	}
	ref := src.GetRef()
	from := target.shown
	if target.via != "" {
		from += fmt.Sprintf(" (private VCS %s)", target.via)
	}
	if ref != "" {
		_, _ = fmt.Fprintf(g.stdout, "Fetching %s at %s\n", from, ref)
	} else {
		_, _ = fmt.Fprintf(g.stdout, "Fetching %s\n", from)
	}

	switch {
	case commitRef.MatchString(ref):
		if err := g.run(ctx, "", "clone", "--no-checkout", "--", target.clone, ws.Dir); err != nil {
			return fmt.Errorf("clone %s: %w", from, err)
		}
		if err := g.run(ctx, ws.Dir, "-c", "advice.detachedHead=false", "checkout", "--detach", ref); err != nil {
			return fmt.Errorf("check out %s: %w", ref, err)
		}
	case ref != "":
		if strings.HasPrefix(ref, "-") {
			return fmt.Errorf("ref %q is not a branch, tag or commit", ref)
		}
		branch := strings.TrimPrefix(strings.TrimPrefix(ref, "refs/heads/"), "refs/tags/")
		if err := g.run(ctx, "", "clone", "--depth", "1", "--branch", branch, "--", target.clone, ws.Dir); err != nil {
			return fmt.Errorf("clone %s at %s: %w", from, ref, err)
		}
	default:
		if err := g.run(ctx, "", "clone", "--depth", "1", "--", target.clone, ws.Dir); err != nil {
			return fmt.Errorf("clone %s: %w", from, err)
		}
	}
	commit, err := g.output(ctx, ws.Dir, "rev-parse", "HEAD")
	if err != nil {
		return fmt.Errorf("read the checked-out commit: %w", err)
	}
	ws.Commit = commit
	_, _ = fmt.Fprintf(g.stdout, "HEAD is now at %s\n", commit)
	return ws.checkRoot()
}

// checkRoot makes sure the project root exists in the source, is a directory,
// and stays inside the workspace once symbolic links are resolved.
func (ws *Workspace) checkRoot() error {
	dir, err := filepath.EvalSymlinks(ws.Dir)
	if err != nil {
		return fmt.Errorf("project root: %w", err)
	}
	root, err := filepath.EvalSymlinks(ws.Root)
	if err != nil {
		rel, _ := filepath.Rel(ws.Dir, ws.Root)
		return fmt.Errorf("project root %q not found in the source", filepath.ToSlash(rel))
	}
	if rel, err := filepath.Rel(dir, root); err != nil || !filepath.IsLocal(rel) {
		return fmt.Errorf("project root %q leads outside the workspace", ws.Root)
	}
	fi, err := os.Stat(root)
	if err != nil {
		return fmt.Errorf("project root: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("project root %q is not a directory", ws.Root)
	}
	return nil
}

// source is a source URL ready for git.
type source struct {
	clone    string // what git clones: the URL without an http(s) password
	shown    string // what errors and output show: userinfo replaced
	via      string // the private VCS name the URL was mapped from
	host     string // scheme://host/ of an http(s) URL, for the credentials' scope
	user     string // http(s) credentials, given to git out of band
	password string
}

// scpLike matches git's scp-like syntax "[user@]host:path".
var scpLike = regexp.MustCompile(`^(?:[A-Za-z0-9._~-]+@)?[A-Za-z0-9.-]+:[^:]`)

func resolveURL(raw string, mappings map[string]string) (source, error) {
	if !strings.Contains(raw, "://") {
		if scpLike.MatchString(raw) && !strings.HasPrefix(raw, "-") {
			return source{clone: raw, shown: redactURL(raw)}, nil
		}
		return source{}, fmt.Errorf("source url %q: not a http, https, ssh or git URL", redactURL(raw))
	}
	u, err := url.Parse(raw)
	if err != nil {
		return source{}, fmt.Errorf("source url: %w", parseErr(err))
	}
	switch u.Scheme {
	case "http", "https":
	case "ssh", "git":
		return source{clone: raw, shown: redactURL(raw)}, nil
	default:
		return source{}, fmt.Errorf("source url %q: scheme %q is not allowed (http, https, ssh, git)", redactURL(raw), u.Scheme)
	}
	if u.Host == "" {
		return source{}, fmt.Errorf("source url %q has no host", redactURL(raw))
	}
	var via string
	if endpoint, ok := lookupMapping(mappings, u.Host); ok {
		via = u.Host
		base, err := url.Parse(endpoint)
		if err != nil {
			return source{}, fmt.Errorf("private VCS %q: base endpoint: %w", u.Host, parseErr(err))
		}
		u.Scheme = base.Scheme
		u.Host = base.Host
		u.Path = strings.TrimSuffix(base.Path, "/") + "/" + strings.TrimPrefix(u.Path, "/")
		u.RawPath = ""
		if u.User == nil {
			u.User = base.User
		}
	}
	s := source{host: u.Scheme + "://" + u.Host + "/", via: via}
	if u.User != nil {
		s.user = u.User.Username()
		s.password, _ = u.User.Password()
		u.User = nil
	}
	s.clone = u.String()
	s.shown = s.clone
	if s.user != "" || s.password != "" {
		s.shown = strings.Replace(s.clone, "://", "://***@", 1)
	}
	return s, nil
}

func lookupMapping(mappings map[string]string, host string) (string, bool) {
	if endpoint, ok := mappings[host]; ok {
		return endpoint, true
	}
	for name, endpoint := range mappings {
		if strings.EqualFold(name, host) {
			return endpoint, true
		}
	}
	return "", false
}

// gitEnv returns git's environment: the executor's without HANGAR_* variables
// and without the git variables set here or that would point git elsewhere, plus
// the settings that keep git from waiting for input, the allowed protocols and
// the source's credentials as an Authorization header scoped to its host.
func gitEnv(environ []string, src source) []string {
	env := make([]string, 0, len(environ)+8)
	sshSet := false
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(name, "HANGAR_"),
			name == "GIT_TERMINAL_PROMPT", name == "GIT_ALLOW_PROTOCOL",
			name == "GIT_CONFIG_COUNT", name == "GIT_CONFIG_PARAMETERS",
			strings.HasPrefix(name, "GIT_CONFIG_KEY_"), strings.HasPrefix(name, "GIT_CONFIG_VALUE_"),
			name == "GIT_DIR", name == "GIT_WORK_TREE":
			continue
		case name == "GIT_SSH_COMMAND" || name == "GIT_SSH":
			sshSet = true
		}
		env = append(env, kv)
	}
	env = append(env,
		"GIT_TERMINAL_PROMPT=0",
		"GCM_INTERACTIVE=never",
		"GIT_ALLOW_PROTOCOL=http:https:ssh:git",
	)
	if !sshSet {
		env = append(env, "GIT_SSH_COMMAND=ssh -o BatchMode=yes")
	}
	if src.user != "" || src.password != "" {
		env = append(env,
			"GIT_CONFIG_COUNT=1",
			"GIT_CONFIG_KEY_0=http."+src.host+".extraHeader",
			"GIT_CONFIG_VALUE_0=Authorization: Basic "+basicToken(src),
		)
	}
	return env
}

func basicToken(src source) string {
	return base64.StdEncoding.EncodeToString([]byte(src.user + ":" + src.password))
}

// git runs git commands, passing their output on line by line with credentials
// removed.
type git struct {
	bin            string
	env            []string
	stdout, stderr io.Writer
	secrets        []string // removed from all output
	// hostDir is the workspace's path on the executor's host: the run's log
	// shows "<workspace>" instead, never where the executor keeps its files.
	hostDir string
}

// run runs git with args in dir ("" for the current directory). The error
// carries the last lines git wrote to stderr.
func (g *git) run(ctx context.Context, dir string, args ...string) error {
	return g.exec(ctx, dir, g.stdout, args...)
}

// output runs git and returns its trimmed stdout.
func (g *git) output(ctx context.Context, dir string, args ...string) (string, error) {
	var out bytes.Buffer
	err := g.exec(ctx, dir, &out, args...)
	return strings.TrimSpace(out.String()), err
}

func (g *git) exec(ctx context.Context, dir string, stdout io.Writer, args ...string) error {
	cmd := exec.CommandContext(ctx, g.bin, args...)
	cmd.Dir = dir
	cmd.Env = g.env
	outLines := &lineRedactor{w: stdout, secrets: g.secrets, hostDir: g.hostDir}
	tail := &tailBuffer{max: 2048}
	errLines := &lineRedactor{w: io.MultiWriter(g.stderr, tail), secrets: g.secrets, hostDir: g.hostDir}
	cmd.Stdout = outLines
	cmd.Stderr = errLines
	err := cmd.Run()
	outLines.flush()
	errLines.flush()
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("git %s: %w", args[0], context.Cause(ctx))
		}
		msg := lastLines(tail.String(), 2)
		if strings.Contains(msg, "terminal prompts disabled") {
			msg += " (the server wants credentials: none or wrong ones in the source URL)"
		}
		if msg != "" {
			return fmt.Errorf("git %s: %w: %s", args[0], err, msg)
		}
		return fmt.Errorf("git %s: %w", args[0], err)
	}
	return nil
}

// lastLines returns the last n lines of git's stderr, without its "Cloning
// into …" announcement.
func lastLines(s string, n int) string {
	var lines []string
	for _, l := range strings.FieldsFunc(s, func(r rune) bool { return r == '\n' || r == '\r' }) {
		if !strings.HasPrefix(l, "Cloning into ") {
			lines = append(lines, l)
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// lineRedactor passes complete lines (ended by \n or \r) to w with URL userinfo
// and the secrets removed; a secret cannot be split across two of its writes.
type lineRedactor struct {
	mu      sync.Mutex
	w       io.Writer
	secrets []string
	hostDir string // replaced by "<workspace>"
	buf     []byte
}

func (l *lineRedactor) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := bytes.IndexAny(l.buf, "\r\n")
		if i < 0 {
			break
		}
		l.emit(l.buf[:i+1])
		l.buf = l.buf[i+1:]
	}
	if len(l.buf) > 64<<10 { // a very long line: pass it on in pieces
		l.emit(l.buf)
		l.buf = nil
	}
	return len(p), nil
}

func (l *lineRedactor) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.emit(l.buf)
		l.buf = nil
	}
}

func (l *lineRedactor) emit(line []byte) {
	s := redactURL(string(line))
	if l.hostDir != "" {
		s = strings.ReplaceAll(s, l.hostDir, "<workspace>")
	}
	for _, secret := range l.secrets {
		s = strings.ReplaceAll(s, secret, "***")
	}
	_, _ = io.WriteString(l.w, s)
}

// tailBuffer keeps the last max bytes written.
type tailBuffer struct {
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.buf) }

// userinfo matches the userinfo of URLs in free text: "scheme://userinfo@".
var userinfo = regexp.MustCompile(`([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@`)

// redactURL replaces the userinfo of every URL in s with "***".
func redactURL(s string) string {
	return userinfo.ReplaceAllString(s, "${1}***@")
}

// parseErr drops the URL that url.Parse's errors quote (it may hold a
// password), keeping what is wrong with it.
func parseErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}
