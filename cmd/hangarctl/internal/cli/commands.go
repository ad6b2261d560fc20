// Package cli implements hangarctl's sub-commands. Each command lives in its own
// file and is listed once in the table below.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"golang.org/x/term"
)

// env is what a command gets: its arguments and where to write.
type env struct {
	args   []string
	stdout io.Writer
	stderr io.Writer
	// terminal is stdout when it is a terminal (live status lines are drawn
	// there), else nil.
	terminal io.Writer
}

// command is one sub-command. Names may contain a space ("pool create").
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env) error
}

// commands lists every sub-command. Add a line here for a new one.
var commands = []command{
	{name: "keygen", summary: "make the pool's RSA-4096 key and CSR", run: runKeygen},
	{name: "ca init", summary: "create the control plane's CA, broker and signing keys", run: runCAInit},
	{name: "pool create", summary: "sign a pool's CSR and print its token", run: runPoolCreate},
	{name: "pool token", summary: "print a pool's token again", run: runPoolToken},
	{name: "pool list", summary: "list the pools", run: runPoolList},
	{name: "broker", summary: "run the embedded MQTT broker (or write a Mosquitto config)", run: runBroker},
	{name: "run submit", summary: "submit a run to a pool (--follow: events and live log)", run: runSubmit},
	{name: "run cancel", summary: "cancel a run wherever it runs", run: runCancel},
	{name: "run confirm", summary: "confirm a tracked run waiting after its plan: it applies", run: runConfirm},
	{name: "workers", summary: "list a pool's workers (gateways, executors) from their heartbeats", run: runWorkers},
	{name: "worker drain", summary: "drain a worker: it finishes its runs and takes nothing new", run: workerCommand(true)},
	{name: "worker undrain", summary: "let a drained worker take runs again", run: workerCommand(false)},
	{name: "pool cycle", summary: "drain every worker of a pool and make it exit once idle", run: runPoolCycle},
	{name: "logs", summary: "print a run's stored, masked log from S3", run: runLogs},
	{name: "pki init", summary: "create a pool's internal CA (mutual TLS between its services)", run: runPKIInit},
	{name: "pki issue", summary: "issue a certificate of a pool's internal CA for one role and id", run: runPKIIssue},
	{name: "setup", summary: "one-shot set-up of a deployment: CA, pool key, pool and token files", run: runSetup},
	{name: "s3", summary: "serve a small S3-compatible server (dev and compose stacks)", run: runS3},
	{name: "dev", summary: "start a whole pool on this machine and run the demo", run: runDev},
	{name: "trace", summary: "draw the trace of a run hangarctl dev kept (a waterfall of its spans)", run: runTrace},
}

// errUsage marks an error caused by bad arguments: exit code 2.
var errUsage = errors.New("usage")

// Main runs hangarctl with args and returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return 0
	}
	// Longest match of the leading words against the command names.
	var found *command
	var rest []string
	for i := range commands {
		words := strings.Fields(commands[i].name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == commands[i].name {
			if found == nil || len(words) > len(strings.Fields(found.name)) {
				found, rest = &commands[i], args[len(words):]
			}
		}
	}
	if found == nil {
		fmt.Fprintf(stderr, "hangarctl: unknown command %q (see hangarctl help)\n", strings.Join(args, " "))
		return 2
	}
	e := env{args: rest, stdout: stdout, stderr: stderr}
	if f, ok := stdout.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		e.terminal = stdout
	}
	err := found.run(ctx, e)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "hangarctl %s: %v\n", found.name, err)
		return 2
	default:
		var ec exitCodeError
		if errors.As(err, &ec) {
			if ec.msg != "" {
				fmt.Fprintf(stderr, "hangarctl %s: %s\n", found.name, ec.msg)
			}
			return ec.code
		}
		fmt.Fprintf(stderr, "hangarctl %s: %v\n", found.name, err)
		return 1
	}
}

// exitCodeError makes Main exit with a given code.
type exitCodeError struct {
	code int
	msg  string
}

func (e exitCodeError) Error() string { return fmt.Sprintf("exit %d: %s", e.code, e.msg) }

func usage(w io.Writer) {
	fmt.Fprintln(w, "hangarctl: the control-plane side of Hangar, and its one-machine dev stack")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	sorted := append([]command(nil), commands...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].name < sorted[j].name })
	for _, c := range sorted {
		fmt.Fprintf(w, "  %-16s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "run `hangarctl COMMAND -h` for a command's flags")
}

// newFlags returns a flag set for a command that writes its usage to e.stderr and
// reports bad flags as usage errors.
func newFlags(name string, e env) *flag.FlagSet {
	fs := flag.NewFlagSet("hangarctl "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return fs
}

// parseFlags parses e.args into fs; bad flags or stray arguments beyond maxArgs
// (-1: any) are usage errors.
func parseFlags(fs *flag.FlagSet, e env, maxArgs int) error {
	if err := fs.Parse(e.args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	if maxArgs >= 0 && fs.NArg() > maxArgs {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(maxArgs))
	}
	return nil
}

// withUsage makes -h of a command print its synopsis (naming its arguments,
// e.g. RUN_ID) and what it does before its flags.
func withUsage(fs *flag.FlagSet, e env, synopsis, what string) {
	fs.Usage = func() {
		fmt.Fprintf(e.stderr, "usage: hangarctl %s\n%s\n\nflags:\n", synopsis, what)
		fs.PrintDefaults()
	}
}
