package integration

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newDirs returns a backing directory holding a.txt and an empty
// mountpoint.
func newDirs(t *testing.T) (backing, mnt string) {
	t.Helper()
	dir := t.TempDir()
	backing, mnt = filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(backing, "a.txt"), []byte("a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return backing, mnt
}

// syncBuffer is a bytes.Buffer that the process writes while the test
// reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// waitFor reports whether sub appears in the buffer within timeout: the
// daemon writes its log lines after the effects tests observe.
func (s *syncBuffer) waitFor(sub string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !strings.Contains(s.String(), sub) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// foreground starts "vfsfilter mount" in the foreground and waits until it
// serves. The returned channel yields the process's exit error.
func foreground(t *testing.T, backing, mnt string) (*exec.Cmd, *syncBuffer, <-chan error) {
	t.Helper()
	cmd := command(t, "mount", backing, mnt)
	stderr := &syncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		lazyUnmountUnder(mnt)
		cmd.Process.Kill()
	})
	if !waitMounted(mnt, true, 10*time.Second) {
		t.Fatalf("not mounted after 10s; stderr:\n%s", stderr)
	}
	return cmd, stderr, done
}

// waitExit waits for the process and returns its exit code.
func waitExit(t *testing.T, done <-chan error, stderr *syncBuffer) int {
	t.Helper()
	select {
	case err := <-done:
		if err == nil {
			return 0
		}
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatalf("vfsfilter did not exit within 30s; stderr:\n%s", stderr)
	}
	return -1
}

// SIGTERM and SIGINT unmount a foreground mount cleanly and exit 0.
func TestSignalUnmounts(t *testing.T) {
	requireFUSE(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(sig.String(), func(t *testing.T) {
			backing, mnt := newDirs(t)
			cmd, stderr, done := foreground(t, backing, mnt)
			if b, err := os.ReadFile(filepath.Join(mnt, "a.txt")); err != nil || string(b) != "a\n" {
				t.Fatalf("read through the mount: %q, %v", b, err)
			}
			cmd.Process.Signal(sig)
			if code := waitExit(t, done, stderr); code != 0 {
				t.Errorf("exit code %d after %v, want 0; stderr:\n%s", code, sig, stderr)
			}
			if isMounted(mnt) {
				t.Errorf("%s still mounted after %v", mnt, sig)
			}
			if !strings.Contains(stderr.String(), "msg=unmounted") {
				t.Errorf("no \"unmounted\" log line; stderr:\n%s", stderr)
			}
		})
	}
}

// A busy mountpoint is detached lazily on SIGTERM; the daemon serves the
// open file until it is closed, then exits 1 with a message.
func TestSignalBusyMount(t *testing.T) {
	requireFUSE(t)
	backing, mnt := newDirs(t)
	cmd, stderr, done := foreground(t, backing, mnt)
	f, err := os.OpenFile(filepath.Join(mnt, "a.txt"), os.O_RDWR|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd.Process.Signal(syscall.SIGTERM)

	// The mount leaves the tree once vfsfilter gives up waiting.
	if !waitMounted(mnt, false, 20*time.Second) {
		t.Fatalf("busy mount not detached within 20s; stderr:\n%s", stderr)
	}
	// The log line follows the detach: the mount leaving the tree is what
	// we waited for, so give the daemon a moment to write it.
	if !stderr.waitFor("detached lazily", 10*time.Second) {
		t.Errorf("no log line about the lazy unmount; stderr:\n%s", stderr)
	}
	// The open file still works: the daemon keeps serving it.
	if _, err := f.WriteString("written after the detach\n"); err != nil {
		t.Errorf("write to the open file after the lazy unmount: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("vfsfilter exited (%v) while a file was still open", err)
	default:
	}
	f.Close()
	if code := waitExit(t, done, stderr); code != 1 {
		t.Errorf("exit code %d, want 1; stderr:\n%s", code, stderr)
	}
	if !strings.Contains(stderr.String(), "was busy at shutdown and had to be detached lazily") {
		t.Errorf("no final message; stderr:\n%s", stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(backing, "a.txt")); string(b) != "a\nwritten after the detach\n" {
		t.Errorf("backing file holds %q: the write after the detach was lost", b)
	}
}

// A daemon stops on SIGTERM like a foreground mount.
func TestSignalDaemon(t *testing.T) {
	requireFUSE(t)
	backing, mnt := newDirs(t)
	mountDaemon(t, backing, mnt)
	pids := taggedPids(runTag + "/" + t.Name())
	if len(pids) != 1 {
		t.Fatalf("want one daemon process, found %v", pids)
	}
	// The daemon left our session: a terminal's Ctrl-C would not reach it.
	if sid, _ := unix.Getsid(pids[0]); sid != pids[0] {
		t.Errorf("daemon %d is in session %d, want its own", pids[0], sid)
	}
	// It does not keep the directory it was started from busy.
	if cwd, err := os.Readlink(filepath.Join("/proc", strconv.Itoa(pids[0]), "cwd")); err != nil || cwd != "/" {
		t.Errorf("daemon cwd = %q, %v; want /", cwd, err)
	}
	syscall.Kill(pids[0], syscall.SIGTERM)
	if !waitMounted(mnt, false, 10*time.Second) {
		t.Fatal("daemon did not unmount on SIGTERM")
	}
	if left := waitTaggedExit(runTag+"/"+t.Name(), 5*time.Second); len(left) > 0 {
		t.Errorf("daemon still running after unmount: %v", left)
	}
}

// Interrupting "mount --daemon" while the daemon starts stops the daemon:
// nobody would know about its mount otherwise. The start is held up by
// giving the child a FIFO as its --rules file.
func TestDaemonParentInterrupted(t *testing.T) {
	requireFUSE(t)
	backing, mnt := newDirs(t)
	fifo := filepath.Join(t.TempDir(), "rules.toml")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := command(t, "mount", "--daemon", "--rules", fifo, backing, mnt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tag := runTag + "/" + t.Name()
	deadline := time.Now().Add(10 * time.Second)
	for len(taggedPids(tag)) < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // let the child reach the FIFO
	cmd.Process.Signal(syscall.SIGINT)

	// The parent now waits for the child, which waits for a writer on
	// the FIFO: be that writer, a little later. Whatever point the child
	// had reached, it must end without leaving a mount.
	go func() {
		time.Sleep(200 * time.Millisecond)
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			if f, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
				f.Close()
				return
			}
		}
	}()
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("parent exit: %v, want status 1", err)
	}
	if !strings.Contains(stderr.String(), "interrupted by interrupt while the daemon was starting") {
		t.Errorf("stderr: %s", stderr.String())
	}
	if left := waitTaggedExit(tag, 5*time.Second); len(left) > 0 {
		t.Errorf("daemon still running: %v", left)
	}
	if isMounted(mnt) {
		t.Errorf("%s mounted after the start was interrupted", mnt)
	}
}
