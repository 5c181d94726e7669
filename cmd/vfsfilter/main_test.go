package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs the command line in-process, as main does.
func runCLI(t *testing.T, args ...string) (code ExitCode, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &env{stdout: &out, stderr: &errb})
	return code, out.String(), errb.String()
}

func TestDispatch(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		args   []string
		code   ExitCode
		stdout string // substring
		stderr string // substring
	}{
		{args: []string{"--help"}, stdout: "Exit codes:\n  0  success"},
		{args: []string{"-h"}, stdout: "Commands:\n  mount"},
		{args: []string{"help"}, stdout: "Commands:"},
		{args: []string{"help", "mount"}, stdout: "Usage: vfsfilter mount [flags] BACKING MOUNTPOINT"},
		{args: []string{"mount", "--help"}, stdout: "--entry-timeout DURATION"},
		{args: []string{"unmount", "-h"}, stdout: "Usage: vfsfilter unmount"},
		{args: []string{"demo", "--help"}, stdout: "Usage: vfsfilter demo"},
		{args: []string{"version"}, stdout: "go-fuse:"},
		{args: []string{"--version"}, stdout: "vfsfilter "},
		{args: nil, code: ExitUsage, stderr: "vfsfilter: no command given"},
		{args: []string{"frobnicate"}, code: ExitUsage, stderr: "vfsfilter: unknown command \"frobnicate\"\nRun 'vfsfilter --help' for usage."},
		{args: []string{"--frob"}, code: ExitUsage, stderr: "unknown flag: --frob"},
		{args: []string{"help", "frob"}, code: ExitUsage, stderr: "unknown command"},
		{args: []string{"mount", "--frob", "a", "b"}, code: ExitUsage, stderr: "unknown flag: --frob\nRun 'vfsfilter mount --help' for usage."},
		{args: []string{"mount", "a"}, code: ExitUsage, stderr: "mount needs 2 arguments"},
		{args: []string{"mount", "--entry-timeout", "soon", "a", "b"}, code: ExitUsage, stderr: "invalid argument \"soon\""},
		{args: []string{"mount", "-o", "bogus", "a", "b"}, code: ExitUsage, stderr: "Run 'vfsfilter mount --help' for usage."},
		{args: []string{"version", "x"}, code: ExitUsage, stderr: "version takes no arguments"},
		{args: []string{"unmount"}, code: ExitUsage, stderr: "unmount needs 1 argument"},
		{args: []string{"demo", "x"}, code: ExitUsage, stderr: "demo takes no arguments"},
		// Pre-flight failures exit with their class before any mount.
		{args: []string{"mount", filepath.Join(dir, "none"), dir}, code: ExitBacking, stderr: "backing directory " + filepath.Join(dir, "none") + " does not exist"},
		{args: []string{"mount", "--hide", "[", dir, dir}, code: ExitMountpoint, stderr: "is the backing directory"},
		{args: []string{"unmount", filepath.Join(dir, "none")}, code: ExitMountpoint, stderr: "is not mounted"},
		{args: []string{"unmount", "/"}, code: ExitMountpoint, stderr: "is not a FUSE mount"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runCLI(t, tt.args...)
			if code != tt.code {
				t.Errorf("exit code %d, want %d\nstderr: %s", code, tt.code, stderr)
			}
			if !strings.Contains(stdout, tt.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdout, stdout)
			}
			if !strings.Contains(stderr, tt.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tt.stderr, stderr)
			}
			if tt.code == ExitOK && stderr != "" {
				t.Errorf("unexpected stderr: %s", stderr)
			}
		})
	}
}

// Every command has the help texts the dispatcher prints.
func TestCommandsDocumented(t *testing.T) {
	for _, c := range commands {
		if c.name == "" || c.short == "" || c.long == "" || !strings.HasPrefix(c.usage, c.name) {
			t.Errorf("command %q lacks help text", c.name)
		}
	}
}
