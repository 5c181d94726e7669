package integration

import (
	"errors"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
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

// exStack is a stack the exercisers run against, set up as a user would:
// `vfsfilter init` (when init is not nil) and `vfsfilter mount --daemon`.
// In the flags, PASS stands for a passphrase file and STORE for an HSM
// store directory, both made per test.
type exStack struct {
	init, mount []string
	// migrate: the stack has an HSM store and files migrate under the
	// tools (how depends on the tool; see setUp's background).
	migrate bool
}

// exerciserStacks: the plain passthrough; the namespace filter with rules
// that match nothing the tools create; crypt; and crypt over the HSM with
// files migrating under the tools' feet.
var exerciserStacks = map[string]exStack{
	"passthrough": {},
	"hide":        {mount: []string{"--hide", "*.swp", "--hide", "node_modules", "--hide", "build/tmp"}},
	"crypt": {
		init:  []string{"--crypt", "--passfile", "PASS", "--scrypt-logn", "10"},
		mount: []string{"--passfile", "PASS"},
	},
	"crypt-hsm-migrating": {
		init:    []string{"--crypt", "--passfile", "PASS", "--scrypt-logn", "10", "--hsm-store", "STORE"},
		mount:   []string{"--passfile", "PASS"},
		migrate: true,
	},
}

// migratedSome matches what `vfsfilter hsm migrate` prints when it moved
// at least one file.
var migratedSome = regexp.MustCompile(`migrated [1-9][0-9]* files`)

// setUp makes the stack over a fresh backing directory and returns its
// mountpoint; the mount, and the migrator if any, end with the test. With
// background (and s.migrate), `vfsfilter hsm migrate` runs over the whole
// mount again and again while the tool runs.
func (s exStack) setUp(t *testing.T, background bool) string {
	t.Helper()
	dir := t.TempDir()
	backing, mnt, pass, store := dir+"/backing", dir+"/mnt", dir+"/pass", dir+"/store"
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(pass, []byte("exerciser passphrase\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	subst := func(args []string) []string {
		out := make([]string, len(args))
		for i, a := range args {
			out[i] = strings.NewReplacer("PASS", pass, "STORE", store).Replace(a)
		}
		return out
	}
	if s.init != nil {
		args := append(append([]string{"init"}, subst(s.init)...), backing)
		if r := vfsfilter(t, args...); r.code != 0 {
			t.Fatalf("vfsfilter %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
		}
	}
	mountDaemon(t, backing, mnt, subst(s.mount)...)
	if s.migrate && background {
		stop := make(chan struct{})
		done := make(chan int)
		go func() {
			n := 0
			defer func() { done <- n }()
			for {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				// Files that vanish or are open meanwhile are
				// skipped or reported; only the data checks of the
				// tools decide.
				cmd := command(t, "hsm", "migrate", mnt)
				if out, _ := cmd.Output(); migratedSome.Match(out) {
					n++
				}
			}
		}()
		// Registered after mountDaemon's cleanup, so it runs before the
		// unmount.
		t.Cleanup(func() {
			close(stop)
			t.Logf("%d migration rounds moved files", <-done)
		})
	}
	return mnt
}

func TestStressNG(t *testing.T) {
	requireFUSE(t)
	tool := needTool(t, "stress-ng")
	for name, stack := range exerciserStacks {
		t.Run(name, func(t *testing.T) {
			mnt := stack.setUp(t, true)
			// Each stressor checks what it reads back (--verify); they
			// run together for a few seconds, in the mount.
			cmd := exec.Command(tool, "--temp-path", mnt, "--verify", "--timeout", "4s",
				"--dir", "1", "--dentry", "1", "--rename", "1", "--link", "1", "--symlink", "1",
				"--hdd", "1", "--hdd-bytes", "8m", "--seek", "1", "--seek-size", "8m",
				"--fallocate", "1", "--fallocate-bytes", "8m", "--lockf", "1", "--flock", "1",
				"--xattr", "1", "--chmod", "1", "--utime", "1", "--filename", "1",
				"--io", "1", "--metrics-brief")
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if errors.As(err, &exit) && exit.ExitCode() == 7 {
				// "The bogo ops metrics may be untrustworthy": a
				// stressor was stopped at the end of the run while it
				// updated its operation counter, which happens on a
				// loaded machine. Its checks (--verify) passed; a
				// failed one exits with 2.
				t.Logf("stress-ng: metrics untrustworthy (exit 7), checks passed")
				err = nil
			}
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
	for name, stack := range exerciserStacks {
		t.Run(name, func(t *testing.T) {
			mnt := stack.setUp(t, false)
			for _, engine := range []string{"psync", "mmap"} {
				// Random 4 KiB writes by two jobs, each block stamped
				// with a checksum and read back and verified.
				args := []string{"--name=verify-" + engine, "--directory=" + mnt,
					"--ioengine=" + engine, "--rw=randwrite", "--bs=4k", "--size=16m",
					"--numjobs=2", "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
					"--group_reporting", "--minimal", "--verify_state_save=0"}
				fio := func(extra ...string) {
					t.Helper()
					cmd := exec.Command(tool, append(args, extra...)...)
					cmd.Dir = t.TempDir() // fio writes its scratch files to the cwd
					if out, err := cmd.CombinedOutput(); err != nil {
						t.Fatalf("fio (%s %s) failed: %v\n%s", engine, strings.Join(extra, " "), err, out)
					}
				}
				fio()
				if stack.migrate {
					// The files are closed now: all become stubs, and
					// a second pass of fio verifies every block again,
					// each read recalling.
					r := vfsfilter(t, "hsm", "migrate", mnt)
					if r.code != 0 || !migratedSome.MatchString(r.stdout) {
						t.Fatalf("hsm migrate: exit %d, %q\n%s", r.code, r.stdout, r.stderr)
					}
					fio("--verify_only")
				}
			}
		})
	}
}
