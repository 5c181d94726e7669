// Command vfsfilter shows a backing directory at a mountpoint through a stack
// of filters, in the manner of Windows file-system filter drivers: each
// filter sees every request on its way down and every result on its way up,
// and may change, answer or refuse it.
//
// This package holds only the command line: flags, building the stack,
// mounting, signals and exit codes. The file system itself lives in
// package layer and the filters' packages. See USAGE.md for the manual.
//
// Sub-commands are dispatched by a small table (commands) rather than a
// framework: each lives in its own cmd_*.go file and is a name, help texts
// and a setup function that defines its flags on a pflag.FlagSet and returns
// the code to run.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// env is what a command may use of the process. Commands take it rather
// than using os.Stdout and os.Args so that tests can run them.
type env struct {
	stdout, stderr io.Writer
	// argv is the whole command line without the program name; the
	// daemon re-executes itself with it.
	argv []string
	// daemon is set in the re-executed child of "mount --daemon" only.
	daemon *daemonReport
}

// command is one sub-command.
type command struct {
	name  string
	usage string // the synopsis after "vfsfilter ", e.g. "mount [flags] BACKING MOUNTPOINT"
	short string // one line for the command list
	long  string // the help text shown above the flags
	// setup defines the command's flags on fs and returns the function that
	// runs it with the positional arguments left after parsing.
	setup func(fs *pflag.FlagSet) func(e *env, args []string) error
}

// commands lists the sub-commands in the order "vfsfilter --help" shows them.
var commands = []*command{cmdMount, cmdUnmount, cmdDemo, cmdVersion}

func main() {
	os.Exit(int(run(os.Args[1:], &env{stdout: os.Stdout, stderr: os.Stderr})))
}

// run executes the command line args (without the program name) and returns
// the exit status. Errors are printed here, once, as "vfsfilter: message".
func run(args []string, e *env) ExitCode {
	// The re-executed child of "mount --daemon" takes its own path: it
	// reports its errors over a pipe rather than to a terminal it no
	// longer has.
	e.argv = args
	if isDaemonChild() {
		return runDaemonChild(args, e)
	}
	err := dispatch(args, e)
	if err == nil || errors.Is(err, errHelpShown) {
		return ExitOK
	}
	fmt.Fprintf(e.stderr, "vfsfilter: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", ue.helpFor)
	}
	return exitCodeOf(err)
}

// helpWidth is the width help texts are wrapped to.
const helpWidth = 80

// errHelpShown ends a command after its --help was printed.
var errHelpShown = errors.New("help shown")

// dispatch finds the sub-command and runs it.
func dispatch(args []string, e *env) error {
	// Global flags come before the command name; stop at the first
	// non-flag so that "vfsfilter mount --help" reaches mount.
	global := pflag.NewFlagSet("vfsfilter", pflag.ContinueOnError)
	global.SetOutput(io.Discard)
	global.SetInterspersed(false)
	help := global.BoolP("help", "h", false, "show this help")
	version := global.Bool("version", false, "print the version and exit")
	if err := global.Parse(args); err != nil {
		return &usageError{msg: err.Error(), helpFor: "vfsfilter"}
	}
	rest := global.Args()
	switch {
	case *help:
		printMainHelp(e.stdout, global)
		return nil
	case *version:
		return printVersion(e.stdout)
	case len(rest) == 0:
		printMainHelp(e.stderr, global)
		return &usageError{msg: "no command given", helpFor: "vfsfilter"}
	}
	name := rest[0]
	if name == "help" {
		// "vfsfilter help [command]", as git and go do.
		if len(rest) == 1 {
			printMainHelp(e.stdout, global)
			return nil
		}
		name, rest = rest[1], []string{rest[1], "--help"}
	}
	cmd := findCommand(name)
	if cmd == nil {
		return &usageError{msg: fmt.Sprintf("unknown command %q", name), helpFor: "vfsfilter"}
	}
	return runCommand(cmd, rest[1:], e)
}

func findCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// parseCommand defines cmd's flags, parses args and returns the function to
// run with the positional arguments. It is separate from runCommand so that
// the daemon child can parse the same command line as its parent.
func parseCommand(cmd *command, args []string, e *env) (func() error, error) {
	fs := pflag.NewFlagSet("vfsfilter "+cmd.name, pflag.ContinueOnError)
	// pflag would print its own error and usage; we print one line and a
	// pointer to --help instead.
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	help := fs.BoolP("help", "h", false, "show this help")
	runFn := cmd.setup(fs)
	if err := fs.Parse(args); err != nil {
		return nil, &usageError{msg: err.Error(), helpFor: "vfsfilter " + cmd.name}
	}
	if *help {
		printCommandHelp(e.stdout, cmd, fs)
		return nil, errHelpShown
	}
	pos := fs.Args()
	return func() error {
		err := runFn(e, pos)
		var ue *usageError
		if errors.As(err, &ue) && ue.helpFor == "" {
			ue.helpFor = "vfsfilter " + cmd.name
		}
		return err
	}, nil
}

func runCommand(cmd *command, args []string, e *env) error {
	fn, err := parseCommand(cmd, args, e)
	if err != nil {
		return err
	}
	return fn()
}

func printMainHelp(w io.Writer, global *pflag.FlagSet) {
	fmt.Fprint(w, `vfsfilter shows a backing directory at a mountpoint through a stack of
filters (FUSE). The filters can hide, rename and add entries and refuse
operations; the real files stay in the backing directory.

Usage:
  vfsfilter [--help | --version]
  vfsfilter <command> [flags] [arguments]

Commands:
`)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.short)
	}
	fmt.Fprintf(w, "\nFlags:\n%s", global.FlagUsagesWrapped(helpWidth))
	fmt.Fprintf(w, "\nExit codes:\n%s", exitCodeHelp())
	fmt.Fprint(w, "\nRun 'vfsfilter <command> --help' for the flags of a command.\n")
}

func printCommandHelp(w io.Writer, cmd *command, fs *pflag.FlagSet) {
	fmt.Fprintf(w, "Usage: vfsfilter %s\n\n%s\n", cmd.usage, strings.TrimSpace(cmd.long))
	fmt.Fprintf(w, "\nFlags:\n%s", fs.FlagUsagesWrapped(helpWidth))
}
