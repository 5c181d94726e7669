package integration

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vfsfilter/vfsfilter/internal/fusectl"
	"golang.org/x/sys/unix"
)

// stuckProcess is a hangexit process stuck in its exit on its own mount.
type stuckProcess struct {
	dir, mnt string
	cmd      *exec.Cmd
	out      *syncBuffer
	exit     chan error // hangexit's exit status, once it has exited
	exited   bool       // exit was read (by the test's goroutine only)
}

// startStuck starts hangexit and waits until it is stuck in its exit: it
// serves its own FUSE mount and exits with a file open on it, and its
// exit waits for a FLUSH that nobody will answer. Whatever the test does,
// the process is not left stuck at its end.
func startStuck(t *testing.T) *stuckProcess {
	requireFUSE(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "hangexit")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/hangexit").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	backing, mnt := filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The aborted mount stays until unmounted; never stat it (a live but
	// unserved mount would hang the test itself).
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })

	p := &stuckProcess{dir: dir, mnt: mnt, out: &syncBuffer{}, exit: make(chan error, 1)}
	p.cmd = exec.Command(bin, backing, mnt)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exit <- p.cmd.Wait() }()
	// Whatever happens, do not leave the process stuck; bounded, so that
	// a failed abort is reported rather than waited for until go test's
	// timeout.
	t.Cleanup(func() {
		if p.exited {
			return
		}
		abortConn(t, mnt)
		select {
		case <-p.exit:
		case <-time.After(30 * time.Second):
			t.Errorf("hangexit (pid %d) is still stuck after its connection was aborted", p.cmd.Process.Pid)
		}
	})

	// Wait until the process is stuck in its exit, or has exited (which
	// would mean the hang did not happen and the test proves nothing).
	for !stuckExiting(p.cmd.Process.Pid) {
		select {
		case err := <-p.exit:
			p.exited = true
			t.Fatalf("hangexit exited by itself (%v), so the hang was not reproduced:\n%s", err, p.out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !strings.Contains(p.out.String(), "ready") {
		t.Fatalf("hangexit is stuck before opening its file:\n%s", p.out.String())
	}
	return p
}

// waitExit waits for the stuck process to finish its exit, at most two
// minutes (a generous bound for a loaded machine), and says whether it did.
func (p *stuckProcess) waitExit(t *testing.T) bool {
	t.Helper()
	select {
	case err := <-p.exit:
		p.exited = true
		if err != nil {
			t.Errorf("hangexit: %v\n%s", err, p.out.String())
		}
		return true
	case <-time.After(2 * time.Minute):
		return false
	}
}

// TestCIWatchdogEndsStuckExit runs .ci/fuse-watchdog.sh against the hang
// it is there for. The process must be seen stuck before the watchdog
// starts, and must finish its exit once the watchdog has aborted the
// connection.
func TestCIWatchdogEndsStuckExit(t *testing.T) {
	p := startStuck(t)
	var wdOut syncBuffer
	wd := exec.Command("bash", "../.ci/fuse-watchdog.sh", p.dir, fmt.Sprint(os.Getpid()))
	wd.Env = append(os.Environ(), "WATCHDOG_INTERVAL=1")
	wd.Stdout, wd.Stderr = &wdOut, &wdOut
	wd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := wd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		syscall.Kill(-wd.Process.Pid, syscall.SIGKILL)
		wd.Wait()
	}()
	if !p.waitExit(t) {
		t.Fatalf("the watchdog did not end the stuck exit; its output:\n%s", wdOut.String())
	}
	if !wdOut.waitFor("aborting connection", 10*time.Second) {
		t.Errorf("the watchdog did not say what it did; its output:\n%s", wdOut.String())
	}
}

// TestUnmountEndsStuckDaemon: "vfsfilter unmount" of a mount whose daemon
// is stuck in its exit (killed with a file open on its own mount) aborts
// the connection, so the daemon finishes dying, and removes the mount.
// It must work where fusectl is not mounted, as on many CI machines and
// containers.
func TestUnmountEndsStuckDaemon(t *testing.T) {
	p := startStuck(t)
	var stderr syncBuffer
	un := command(t, "unmount", p.mnt)
	un.Stderr = &stderr
	if err := un.Start(); err != nil {
		t.Fatal(err)
	}
	unDone := make(chan error, 1)
	go func() { unDone <- un.Wait() }()
	select {
	case err := <-unDone:
		if err != nil {
			t.Fatalf("unmount: %v\n%s", err, stderr.String())
		}
	case <-time.After(time.Minute):
		// Touching the unserved mount hangs; the cleanup's abort
		// ends it.
		t.Fatalf("unmount hangs on the mount of a stuck daemon; it said:\n%s", stderr.String())
	}
	if strings.Contains(stderr.String(), "could not be aborted") {
		t.Errorf("unmount could not abort the connection:\n%s", stderr.String())
	}
	if !p.waitExit(t) {
		t.Fatalf("the daemon is still stuck in its exit after unmount; unmount said:\n%s", stderr.String())
	}
	if isMounted(p.mnt) {
		t.Errorf("%s is still mounted", p.mnt)
	}
}

// stuckExiting reports whether a thread of process pid is exiting
// (PF_EXITING) and asleep, as the watchdog looks for.
func stuckExiting(pid int) bool {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/stat", pid))
	for _, p := range tasks {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		var flags uint64
		if len(f) > 6 {
			fmt.Sscan(f[6], &flags)
		}
		if (f[0] == "S" || f[0] == "D") && flags&0x4 != 0 {
			return true
		}
	}
	return false
}

// abortConn aborts the FUSE connection of the mount at mnt, found in
// /proc/self/mountinfo without touching the mount.
func abortConn(t *testing.T, mnt string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Error(err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeOctal(fields[4]) == mnt {
			_, minor, _ := strings.Cut(fields[2], ":")
			if err := fusectl.Abort(minor); err != nil {
				t.Error(err)
			}
			return
		}
	}
}
