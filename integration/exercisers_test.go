package integration

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// Public file-system exercisers run against the built binary's mount, as
// a user would run them: stress-ng's file-system stressors with their own
// verification, and fio writing random blocks and verifying every one by
// checksum. Both are installed by .ci/setup.sh; in CI a missing tool fails.

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is missing: .ci/setup.sh installs it", name)
	}
	t.Skipf("%s is not installed (bash .ci/setup.sh installs it)", name)
	return ""
}

// exerciserStacks are the stacks the exercisers run against: the plain
// passthrough and the namespace filter with rules that match nothing the
// tools create.
var exerciserStacks = map[string][]string{
	"passthrough": nil,
	"hide":        {"--hide", "*.swp", "--hide", "node_modules", "--hide", "build/tmp"},
}

func TestStressNG(t *testing.T) {
	requireFUSE(t)
	tool := needTool(t, "stress-ng")
	for name, args := range exerciserStacks {
		t.Run(name, func(t *testing.T) {
			backing, mnt := t.TempDir(), t.TempDir()
			mountDaemon(t, backing, mnt, args...)
			// Each stressor checks what it reads back (--verify); they
			// run together for a few seconds, in the mount.
			cmd := exec.Command(tool, "--temp-path", mnt, "--verify", "--timeout", "4s",
				"--dir", "1", "--dentry", "1", "--rename", "1", "--link", "1", "--symlink", "1",
				"--hdd", "1", "--hdd-bytes", "8m", "--seek", "1", "--seek-size", "8m",
				"--fallocate", "1", "--fallocate-bytes", "8m", "--lockf", "1", "--flock", "1",
				"--xattr", "1", "--chmod", "1", "--utime", "1", "--filename", "1",
				"--io", "1", "--metrics-brief")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("stress-ng failed: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "successful run completed") {
				t.Fatalf("stress-ng did not report success:\n%s", out)
			}
		})
	}
}

func TestFioVerify(t *testing.T) {
	requireFUSE(t)
	tool := needTool(t, "fio")
	for name, args := range exerciserStacks {
		t.Run(name, func(t *testing.T) {
			backing, mnt := t.TempDir(), t.TempDir()
			mountDaemon(t, backing, mnt, args...)
			for _, engine := range []string{"psync", "mmap"} {
				// Random 4 KiB writes by two jobs, each block stamped
				// with a checksum and read back and verified.
				cmd := exec.Command(tool, "--name=verify-"+engine, "--directory="+mnt,
					"--ioengine="+engine, "--rw=randwrite", "--bs=4k", "--size=16m",
					"--numjobs=2", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
					"--group_reporting", "--minimal", "--verify_state_save=0")
				cmd.Dir = t.TempDir() // fio writes its scratch files to the cwd
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Fatalf("fio (%s) failed: %v\n%s", engine, err, out)
				}
			}
		})
	}
}
