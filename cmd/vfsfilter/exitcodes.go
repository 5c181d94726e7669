package main

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// ExitCode is the status vfsfilter exits with. Scripts and service managers
// can tell the failure classes apart without parsing messages; every code
// but ExitFailure is decided before anything is mounted.
type ExitCode int

// The exit codes of vfsfilter. The table printed by "vfsfilter --help" and
// the one in USAGE.md are generated from, and tested against, exitCodeTable.
const (
	// ExitOK: the command succeeded; for mount, the file system was
	// unmounted cleanly (by a signal or by "vfsfilter unmount").
	ExitOK ExitCode = 0
	// ExitFailure: any failure not listed below, such as the kernel
	// refusing the mount, or a busy mountpoint that had to be detached
	// lazily on shutdown.
	ExitFailure ExitCode = 1
	// ExitUsage: bad command line: unknown command or flag, wrong number of
	// arguments, an unknown or malformed -o option, a bad duration.
	ExitUsage ExitCode = 2
	// ExitBacking: the backing directory is missing, is not a directory,
	// or cannot be opened.
	ExitBacking ExitCode = 3
	// ExitMountpoint: the mountpoint is missing, is not a directory, is
	// not empty, is already mounted, or lies inside the backing directory;
	// for unmount, the path is not mounted.
	ExitMountpoint ExitCode = 4
	// ExitNoFUSE: the FUSE device /dev/fuse is missing or the kernel has no
	// FUSE support.
	ExitNoFUSE ExitCode = 5
	// ExitPrivilege: not allowed to mount or unmount: neither
	// CAP_SYS_ADMIN nor a usable fusermount3 helper, no access to
	// /dev/fuse, or allow_other without user_allow_other in /etc/fuse.conf.
	ExitPrivilege ExitCode = 6
	// ExitRules: the rules file cannot be read or parsed, or a --hide
	// pattern or rule is invalid.
	ExitRules ExitCode = 7
	// ExitPassword: the passphrase does not unlock the encrypted BACKING
	// (it is wrong, or the settings' crypt section was changed). Mount
	// refuses before mounting anything; "crypt passwd" and "crypt fsck"
	// refuse too.
	ExitPassword ExitCode = 8
)

// exitCodeTable documents the codes in the order they are listed.
var exitCodeTable = []struct {
	Code    ExitCode
	Meaning string
}{
	{ExitOK, "success; mount: unmounted cleanly"},
	{ExitFailure, "other failure (mount refused by the kernel, busy mountpoint detached lazily, ...)"},
	{ExitUsage, "usage error: bad command, flag, argument or -o option"},
	{ExitBacking, "backing directory missing, not a directory, or unreadable"},
	{ExitMountpoint, "mountpoint missing, not a directory, not empty, already mounted (unmount: not mounted)"},
	{ExitNoFUSE, "no FUSE support: /dev/fuse missing or unusable"},
	{ExitPrivilege, "not enough privilege to mount or unmount"},
	{ExitRules, "bad rules file or --hide pattern"},
	{ExitPassword, "wrong passphrase for an encrypted BACKING"},
}

// exitCodeHelp renders exitCodeTable for the help text.
func exitCodeHelp() string {
	var b strings.Builder
	for _, e := range exitCodeTable {
		fmt.Fprintf(&b, "  %d  %s\n", e.Code, e.Meaning)
	}
	return b.String()
}

// exitError is an error that carries the status the process exits with.
type exitError struct {
	code ExitCode
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withCode attaches code to err; a nil err stays nil.
func withCode(code ExitCode, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// errorf returns a formatted error that exits with code.
func errorf(code ExitCode, format string, args ...any) error {
	return &exitError{code: code, err: fmt.Errorf(format, args...)}
}

// usageError is a command-line mistake. It is printed with a pointer to the
// --help of the command it concerns (helpFor, filled in by the dispatcher
// when the command leaves it empty).
type usageError struct {
	msg     string
	helpFor string
}

func (e *usageError) Error() string { return e.msg }

func usageErrorf(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCodeOf selects the exit status for err: the code attached with
// withCode/errorf, ExitUsage for usage errors, ExitFailure otherwise.
func exitCodeOf(err error) ExitCode {
	if err == nil {
		return ExitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return ExitUsage
	}
	return ExitFailure
}

// classifyMountError picks the exit code for an error returned by the mount
// itself, after every pre-flight check passed. The checks catch the usual
// causes with better messages; this is for what slips through (a race, a
// container without CAP_SYS_ADMIN whose mount(2) says EPERM, a kernel
// without FUSE that says ENODEV).
func classifyMountError(err error) ExitCode {
	switch {
	case errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EACCES):
		return ExitPrivilege
	case errors.Is(err, syscall.ENODEV), errors.Is(err, syscall.ENXIO):
		// mount(2) says ENODEV when the "fuse" file system type is not
		// registered; opening /dev/fuse says ENXIO/ENODEV without a driver.
		return ExitNoFUSE
	case errors.Is(err, syscall.ENOTCONN):
		// A dead FUSE mount is already sitting on the mountpoint.
		return ExitMountpoint
	}
	return ExitFailure
}
