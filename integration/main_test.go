// Package integration tests vfsfilter as users run it: it builds the
// vfsfilter binary once, mounts real FUSE file systems with it, and checks
// what processes see through the mounts.
//
// The tests need root (or CAP_SYS_ADMIN) and /dev/fuse. Without them they
// skip with a message, except when the environment says CI=true: in CI a
// skipped mount test is a test that did not run, so it fails.
//
// Every mount is made under one temporary directory. After the tests,
// TestMain fails the run if a mount is left there, if a daemon is still
// running, or (with -race) if a daemon reported a data race; it detaches
// leftovers so that a failed run does not leave the machine dirty.
package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	// vfsfilterBin is the binary under test.
	vfsfilterBin string
	// testRoot holds everything the tests create, mounts included.
	testRoot string
	// runTag marks the processes this run starts, through the environment
	// variable tagEnv, so that they can be found (and killed) even when
	// they daemonized. Subtests and scripts append their own name.
	runTag string
	// fuseSkipReason is why mount tests cannot run here, or "".
	fuseSkipReason string
)

// tagEnv is inherited by every process the tests start.
const tagEnv = "VFSFILTER_TEST_TAG"

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) (code int) {
	root, err := os.MkdirTemp("", "vfsfilter-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// Compare mount points with what the kernel records: resolved paths.
	if testRoot, err = filepath.EvalSymlinks(root); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// t.TempDir and testscript's work directories go under testRoot.
	os.Setenv("TMPDIR", testRoot)
	runTag = fmt.Sprintf("vfsfilter-integration-%d", os.Getpid())
	os.Setenv(tagEnv, runTag)

	binDir := filepath.Join(testRoot, "bin")
	vfsfilterBin = filepath.Join(binDir, "vfsfilter")
	build := []string{"build", "-o", vfsfilterBin}
	if raceEnabled {
		// The daemon is the concurrent part: build it with the race
		// detector when the tests run with it. Reports go to files that
		// are checked below, since a daemon has no stderr to print to.
		build = append(build, "-race")
		// atexit_sleep_ms: the default 1s pause at every exit would
		// add a second to each of the hundreds of runs of the binary.
		os.Setenv("GORACE", "log_path="+filepath.Join(testRoot, "race")+" halt_on_error=1 atexit_sleep_ms=10")
	}
	build = append(build, "../cmd/vfsfilter")
	if out, err := exec.Command("go", build...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go %s: %v\n%s", strings.Join(build, " "), err, out)
		return 1
	}
	os.Setenv("PATH", binDir+string(os.PathListSeparator)+os.Getenv("PATH"))

	fuseSkipReason = checkFUSEAvailable()

	code = m.Run()

	if leftovers(os.Stderr) {
		code = 1
	}
	if code == 0 {
		os.RemoveAll(testRoot)
	} else {
		fmt.Fprintf(os.Stderr, "test files kept in %s\n", testRoot)
	}
	return code
}

// leftovers reports (and cleans up) what the tests must not leave behind:
// mounts under testRoot, running processes started by the tests, and race
// reports of daemons.
func leftovers(w *os.File) bool {
	bad := false
	for _, mnt := range mountsUnder(testRoot) {
		fmt.Fprintf(w, "FAIL: a test left %s mounted\n", mnt)
		bad = true
	}
	lazyUnmountUnder(testRoot)
	// A daemon exits once its mount is gone; give the last ones a moment.
	if pids := waitTaggedExit(runTag, 3*time.Second); len(pids) > 0 {
		fmt.Fprintf(w, "FAIL: processes still running after the tests: %v\n", pids)
		killTagged(runTag)
		bad = true
	}
	reports, _ := filepath.Glob(filepath.Join(testRoot, "race.*"))
	for _, r := range reports {
		b, _ := os.ReadFile(r)
		fmt.Fprintf(w, "FAIL: a vfsfilter process reported a data race (%s):\n%s\n", r, b)
		bad = true
	}
	return bad
}

// checkFUSEAvailable says why mounts cannot be made here, or "".
func checkFUSEAvailable() string {
	if os.Geteuid() != 0 {
		return "the integration tests mount FUSE file systems and need root"
	}
	if st, err := os.Stat("/dev/fuse"); err != nil || st.Mode()&os.ModeCharDevice == 0 {
		return "/dev/fuse is missing"
	}
	return ""
}

// requireFUSE skips t when mounts cannot be made here, and fails it
// instead under CI=true.
func requireFUSE(t testing.TB) {
	t.Helper()
	if fuseSkipReason == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s; CI=true, so this is a failure rather than a skip", fuseSkipReason)
	}
	t.Skipf("skipping: %s", fuseSkipReason)
}

// result is the outcome of one run of the binary.
type result struct {
	code           int
	stdout, stderr string
}

// vfsfilter runs the binary with args, its processes tagged with the test's
// name, and returns its exit code and output. It fails t only if the binary
// cannot be run at all.
func vfsfilter(t testing.TB, args ...string) result {
	t.Helper()
	cmd := command(t, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("vfsfilter %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// command returns an exec.Cmd for the binary whose processes (the daemon
// included) carry a tag naming t. The first command of a test registers a
// cleanup that fails the test if any of them outlives it; being registered
// first, it runs after every other cleanup of the test (unmounts among
// them).
func command(t testing.TB, args ...string) *exec.Cmd {
	t.Helper()
	tag := runTag + "/" + t.Name()
	watchedMu.Lock()
	first := !watched[tag]
	watched[tag] = true
	watchedMu.Unlock()
	if first {
		t.Cleanup(func() {
			if pids := waitTaggedExit(tag, 3*time.Second); len(pids) > 0 {
				t.Errorf("processes of %s still running: %v; killing them", t.Name(), pids)
				killTagged(tag)
			}
			watchedMu.Lock()
			delete(watched, tag)
			watchedMu.Unlock()
		})
	}
	cmd := exec.Command(vfsfilterBin, args...)
	cmd.Env = append(os.Environ(), tagEnv+"="+tag)
	return cmd
}

// watched holds the tags of the tests whose processes are checked.
var (
	watchedMu sync.Mutex
	watched   = map[string]bool{}
)

// mountDaemon mounts backing at mnt with "vfsfilter mount --daemon" and the
// extra args, and unmounts it when t ends.
func mountDaemon(t testing.TB, backing, mnt string, args ...string) {
	t.Helper()
	all := append([]string{"mount", "--daemon"}, args...)
	all = append(all, backing, mnt)
	r := vfsfilter(t, all...)
	if r.code != 0 {
		t.Fatalf("vfsfilter %s: exit %d\n%s", strings.Join(all, " "), r.code, r.stderr)
	}
	if !isMounted(mnt) {
		t.Fatalf("vfsfilter mount --daemon returned 0 but %s is not mounted", mnt)
	}
	t.Cleanup(func() { unmount(t, mnt) })
}

// unmount unmounts mnt with "vfsfilter unmount" and checks that it is gone.
func unmount(t testing.TB, mnt string) {
	t.Helper()
	if !isMounted(mnt) {
		return
	}
	if r := vfsfilter(t, "unmount", mnt); r.code != 0 {
		t.Errorf("vfsfilter unmount %s: exit %d\n%s", mnt, r.code, r.stderr)
		lazyUnmountUnder(mnt)
	}
	if isMounted(mnt) {
		t.Errorf("%s is still mounted after vfsfilter unmount", mnt)
	}
}
