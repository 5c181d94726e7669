package main

import (
	"os"
	"strings"
	"testing"

	"github.com/vfsfilter/vfsfilter/layer/conformance"
)

// The demo runs in-process from start to end: every step's check passes,
// and it leaves nothing behind in TMPDIR.
func TestDemo(t *testing.T) {
	conformance.RequireFUSE(t)
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	code, stdout, stderr := runCLI(t, "demo")
	if code != ExitOK || stderr != "" {
		t.Fatalf("exit code %d, stderr:\n%s\nstdout:\n%s", code, stderr, stdout)
	}
	for _, want := range []string{
		"\nThe stack, top first: notify,namespace,crypt,hsm,notify-source,passthrough\n",
		"remove build/output.log",
		"block 1 (bytes  4096- 8191): Input/output error (EIO)",
		"premigrated  1.5MiB",
		"\nUnmounted ",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
	if left, _ := os.ReadDir(tmp); len(left) > 0 {
		t.Errorf("the demo left %v in TMPDIR", left)
	}
}
