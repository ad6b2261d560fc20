// Package devshell is the shell of the dev stack's runner image: a POSIX
// shell interpreter (mvdan.cc/sh) with the few commands a demo run uses
// (sleep, cat, ls, env, mkdir, rm, id, hostname), built as one static binary
// that `hangarctl dev` packages FROM scratch and imports into the local
// engine, so that the demo runs in a container on a host with no image, no
// registry and no busybox (ADR 0015). It is not a general-purpose shell.
package devshell

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/interp"
	"mvdan.cc/sh/v3/syntax"
)

// Commands are the commands the shell provides besides its builtins (echo,
// printf, test, [, true, false, cd, pwd, set, exit, ...); the image links
// each of them to the binary, which dispatches on its name.
func Commands() []string {
	return []string{"sh", "sleep", "cat", "ls", "env", "mkdir", "rm", "id", "hostname", "echo", "printf", "true", "false", "test", "["}
}

// Main runs the binary as the command args[0] names (sh when it names none
// of Commands) and returns its exit status.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	name := filepath.Base(args[0])
	if name != "sh" && isCommand(name) {
		return command(ctx, name, args[1:], stdin, stdout, stderr, "/", os.Environ())
	}
	return shell(ctx, args[1:], stdin, stdout, stderr)
}

func isCommand(name string) bool {
	for _, c := range Commands() {
		if c == name {
			return true
		}
	}
	return false
}

// shell implements `sh -c SCRIPT [ARG0 [ARGS...]]` and `sh FILE [ARGS...]`.
func shell(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var src io.Reader
	name := "sh"
	var params []string
	switch {
	case len(args) >= 2 && args[0] == "-c":
		src = strings.NewReader(args[1])
		if len(args) > 2 {
			name, params = args[2], args[3:]
		}
	case len(args) >= 1 && !strings.HasPrefix(args[0], "-"):
		f, err := os.Open(args[0])
		if err != nil {
			fmt.Fprintf(stderr, "sh: %v\n", err)
			return 127
		}
		defer f.Close()
		src, name, params = f, args[0], args[1:]
	default:
		fmt.Fprintln(stderr, "usage: sh -c SCRIPT [NAME [ARGS...]] | sh FILE [ARGS...] (the dev runner's shell runs scripts, not a terminal)")
		return 2
	}
	file, err := syntax.NewParser().Parse(src, name)
	if err != nil {
		fmt.Fprintf(stderr, "sh: %v\n", err)
		return 2
	}
	r, err := interp.New(
		interp.StdIO(stdin, stdout, stderr),
		interp.Env(expand.ListEnviron(os.Environ()...)),
		interp.Params(append([]string{"--"}, params...)...),
		interp.ExecHandlers(func(next interp.ExecHandlerFunc) interp.ExecHandlerFunc {
			return func(ctx context.Context, args []string) error {
				if isCommand(args[0]) && args[0] != "sh" {
					hc := interp.HandlerCtx(ctx)
					var env []string
					hc.Env.Each(func(n string, v expand.Variable) bool {
						if v.Exported && v.IsSet() {
							env = append(env, n+"="+v.String())
						}
						return true
					})
					if code := command(ctx, args[0], args[1:], hc.Stdin, hc.Stdout, hc.Stderr, hc.Dir, env); code != 0 {
						return interp.ExitStatus(uint8(code))
					}
					return nil
				}
				return next(ctx, args)
			}
		}),
	)
	if err != nil {
		fmt.Fprintf(stderr, "sh: %v\n", err)
		return 2
	}
	err = r.Run(ctx, file)
	var es interp.ExitStatus
	switch {
	case err == nil:
		return 0
	case errors.As(err, &es):
		return int(es)
	default:
		fmt.Fprintf(stderr, "sh: %v\n", err)
		return 1
	}
}

// command runs one of Commands (other than sh) and returns its exit status.
func command(ctx context.Context, name string, args []string, stdin io.Reader, stdout, stderr io.Writer, dir string, env []string) int {
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, name+": "+format+"\n", a...)
		return 1
	}
	path := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	switch name {
	case "true":
		return 0
	case "false":
		return 1
	case "echo", "printf", "test", "[":
		// Builtins of the shell: run them through it.
		// (name is one of a fixed list: safe as shell text.)
		return shell(ctx, append([]string{"-c", name + ` "$@"`, "sh"}, args...), stdin, stdout, stderr)
	case "sleep":
		var total time.Duration
		for _, a := range args {
			s, err := strconv.ParseFloat(strings.TrimSuffix(a, "s"), 64)
			if err != nil || s < 0 {
				return fail("invalid time interval %q (seconds)", a)
			}
			total += time.Duration(s * float64(time.Second))
		}
		select {
		case <-time.After(total):
			return 0
		case <-ctx.Done():
			return 130
		}
	case "cat":
		if len(args) == 0 {
			args = []string{"-"}
		}
		code := 0
		for _, a := range args {
			var r io.Reader = stdin
			if a != "-" {
				f, err := os.Open(path(a))
				if err != nil {
					code = fail("%v", err)
					continue
				}
				r = f
				defer f.Close()
			}
			if _, err := io.Copy(stdout, r); err != nil {
				code = fail("%v", err)
			}
		}
		return code
	case "ls":
		if len(args) == 0 {
			args = []string{"."}
		}
		code := 0
		for _, a := range args {
			entries, err := os.ReadDir(path(a))
			if err != nil {
				if _, serr := os.Stat(path(a)); serr == nil {
					fmt.Fprintln(stdout, a)
					continue
				}
				code = fail("%v", err)
				continue
			}
			for _, e := range entries {
				fmt.Fprintln(stdout, e.Name())
			}
		}
		return code
	case "env":
		for _, kv := range env {
			fmt.Fprintln(stdout, kv)
		}
		return 0
	case "mkdir":
		parents := false
		for _, a := range args {
			if a == "-p" {
				parents = true
				continue
			}
			var err error
			if parents {
				err = os.MkdirAll(path(a), 0o755)
			} else {
				err = os.Mkdir(path(a), 0o755)
			}
			if err != nil {
				return fail("%v", err)
			}
		}
		return 0
	case "rm":
		force, recursive := false, false
		for _, a := range args {
			if strings.HasPrefix(a, "-") && len(a) > 1 {
				force = force || strings.Contains(a, "f")
				recursive = recursive || strings.ContainsAny(a, "rR")
				continue
			}
			var err error
			if recursive {
				err = os.RemoveAll(path(a))
			} else {
				err = os.Remove(path(a))
			}
			if err != nil && !(force && errors.Is(err, os.ErrNotExist)) {
				return fail("%v", err)
			}
		}
		return 0
	case "id":
		fmt.Fprintf(stdout, "uid=%d gid=%d\n", os.Getuid(), os.Getgid())
		return 0
	case "hostname":
		h, err := os.Hostname()
		if err != nil {
			return fail("%v", err)
		}
		fmt.Fprintln(stdout, h)
		return 0
	}
	return fail("not a command of the dev runner's shell (it has %s)", strings.Join(Commands(), ", "))
}
