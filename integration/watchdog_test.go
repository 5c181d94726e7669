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

	"golang.org/x/sys/unix"
)

// TestCIWatchdogEndsStuckExit runs .ci/fuse-watchdog.sh against the hang
// it is there for: a process that serves its own FUSE mount exits with a
// file open on it, and its exit waits for a FLUSH that nobody will answer.
// The process must be seen stuck before the watchdog starts, and must
// finish its exit once the watchdog has aborted the connection.
func TestCIWatchdogEndsStuckExit(t *testing.T) {
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

	var out syncBuffer
	hang := exec.Command(bin, backing, mnt)
	hang.Stdout, hang.Stderr = &out, &out
	if err := hang.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- hang.Wait() }()
	exited := false
	// Whatever happens below, do not leave the process stuck.
	defer func() {
		if !exited {
			abortConn(t, mnt)
			<-done
		}
	}()

	// Wait until the process is stuck in its exit, or has exited (which
	// would mean the hang did not happen and the test proves nothing).
	for !stuckExiting(hang.Process.Pid) {
		select {
		case err := <-done:
			exited = true
			t.Fatalf("hangexit exited by itself (%v), so the hang was not reproduced:\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if !strings.Contains(out.String(), "ready") {
		t.Fatalf("hangexit is stuck before opening its file:\n%s", out.String())
	}

	var wdOut syncBuffer
	wd := exec.Command("bash", "../.ci/fuse-watchdog.sh", dir, fmt.Sprint(os.Getpid()))
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

	// A generous bound for two of the watchdog's one-second checks on a
	// loaded machine; past it the test aborts the connection itself.
	select {
	case err := <-done:
		exited = true
		if err != nil {
			t.Errorf("hangexit: %v\n%s", err, out.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("the watchdog did not end the stuck exit; its output:\n%s", wdOut.String())
	}
	if !wdOut.waitFor("aborting connection", 10*time.Second) {
		t.Errorf("the watchdog did not say what it did; its output:\n%s", wdOut.String())
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
			if err := os.WriteFile("/sys/fs/fuse/connections/"+minor+"/abort", []byte("1"), 0); err != nil {
				t.Error(err)
			}
			return
		}
	}
}
