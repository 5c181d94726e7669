package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
	"testing"
)

func TestExitCodeOf(t *testing.T) {
	tests := []struct {
		err  error
		want ExitCode
	}{
		{nil, ExitOK},
		{errors.New("plain"), ExitFailure},
		{usageErrorf("bad"), ExitUsage},
		{fmt.Errorf("wrapped: %w", usageErrorf("bad")), ExitUsage},
		{errorf(ExitBacking, "x"), ExitBacking},
		{fmt.Errorf("wrapped: %w", errorf(ExitRules, "x")), ExitRules},
		{withCode(ExitNoFUSE, syscall.ENOENT), ExitNoFUSE},
		// The innermost code is not looked for: the outermost decides.
		{withCode(ExitMountpoint, errorf(ExitBacking, "x")), ExitMountpoint},
	}
	for _, tt := range tests {
		if got := exitCodeOf(tt.err); got != tt.want {
			t.Errorf("exitCodeOf(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
	if withCode(ExitRules, nil) != nil {
		t.Error("withCode(code, nil) != nil")
	}
	// The code travels with the error, the message is unchanged.
	err := withCode(ExitBacking, fs.ErrNotExist)
	if err.Error() != fs.ErrNotExist.Error() || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("withCode changed the error: %v", err)
	}
}

func TestClassifyMountError(t *testing.T) {
	tests := []struct {
		err  error
		want ExitCode
	}{
		{syscall.EPERM, ExitPrivilege},
		{&fs.PathError{Op: "open", Path: "/dev/fuse", Err: syscall.EACCES}, ExitPrivilege},
		{fmt.Errorf("mount: %w", syscall.ENODEV), ExitNoFUSE},
		{syscall.ENOTCONN, ExitMountpoint},
		{syscall.EINVAL, ExitFailure},
		{errors.New(`exec: "/bin/fusermount": stat /bin/fusermount: no such file or directory`), ExitFailure},
	}
	for _, tt := range tests {
		if got := classifyMountError(tt.err); got != tt.want {
			t.Errorf("classifyMountError(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// The table lists every code once, in order; --help and USAGE.md show it.
func TestExitCodeTable(t *testing.T) {
	for i, e := range exitCodeTable {
		if int(e.Code) != i {
			t.Errorf("exitCodeTable[%d] is code %d", i, e.Code)
		}
	}
	if last := exitCodeTable[len(exitCodeTable)-1].Code; last != ExitPassword {
		t.Errorf("the table ends at %d; a new code must be added to it", last)
	}
	help := exitCodeHelp()
	usage, err := os.ReadFile("USAGE.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exitCodeTable {
		if !strings.Contains(help, fmt.Sprintf("  %d  %s\n", e.Code, e.Meaning)) {
			t.Errorf("--help lacks code %d", e.Code)
		}
		if row := fmt.Sprintf("| %d | %s |", e.Code, e.Meaning); !strings.Contains(string(usage), row) {
			t.Errorf("USAGE.md lacks the row %q", row)
		}
	}
}
