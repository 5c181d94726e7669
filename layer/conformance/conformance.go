// Package conformance checks that a stack behaves like a local file system.
// It mounts the stack for real (FUSE, in-process) over a fresh backing
// directory and runs go-fuse's posixtest suite plus this project's own
// scenarios against it. Every filter package runs it against the stacks it
// builds, so a filter that breaks local-file-system semantics is caught
// where it is written.
package conformance

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"github.com/vfsfilter/vfsfilter/layer"
	"golang.org/x/sys/unix"
)

// StackFunc builds the stack under test over the backing directory.
type StackFunc func(t testing.TB, backing string) *layer.Stack

// Skip lists posixtest cases that are wrong on every file system, ext4
// included, and so are not run.
var Skip = map[string]string{
	"FcntlFlockLocksFile": "the test expects a lock to be released by close of another fd; wrong on every file system",
}

// RequireFUSE fails (in CI) or skips (elsewhere) when this machine cannot
// mount FUSE as root.
func RequireFUSE(t testing.TB) {
	t.Helper()
	reason := ""
	if os.Geteuid() != 0 {
		reason = "needs root to mount FUSE with passthrough"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		reason = "no /dev/fuse"
	}
	if reason == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("FUSE tests must run in CI: %s", reason)
	}
	t.Skip(reason)
}

// Mount builds a stack with mk over a new backing dir, mounts it and
// unmounts it when the test ends. It returns the mountpoint and the
// backing dir.
func Mount(t testing.TB, mk StackFunc, opts layer.MountOptions) (mnt, backing string) {
	t.Helper()
	RequireFUSE(t)
	backing = t.TempDir()
	mnt = t.TempDir()
	st := mk(t, backing)
	if os.Getenv("VFS_TEST_DEBUG") != "" {
		// FUSE request tracing for the failing test at hand.
		opts.Debug = true
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv, err := layer.Mount(mnt, st, opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	UnmountAtEnd(t, srv)
	return mnt, backing
}

// SmallTmpfs mounts a tmpfs of size (mount(8)'s "size=" syntax, "1m") on
// dir, an empty directory, for tests of a full disk, and detaches it when
// the test ends.
func SmallTmpfs(t testing.TB, dir, size string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Fatalf("mount a %s tmpfs on %s: %v", size, dir, err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
}

// UnmountAtEnd unmounts srv when the test ends. Should the unmount fail
// (busy), it reports that and detaches the mount lazily, so that nothing
// that runs after it, the temp-dir clean-up above all, walks into a file
// system that is still served: with its stack closed, that clean-up would
// remove what the mount's ops reach.
func UnmountAtEnd(t testing.TB, srv *layer.Server) {
	t.Cleanup(func() {
		// Busy for a while is no error: on a loaded machine the last
		// references of a test's files may take longer to go than
		// Unmount's own retries (a second).
		var err error
		for deadline := time.Now().Add(10 * time.Second); ; {
			if err = srv.Unmount(); err == nil || !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Errorf("unmount %s: %v", srv.Mountpoint(), err)
			unix.Unmount(srv.Mountpoint(), unix.MNT_DETACH)
		}
	})
}

// RunPosix runs every posixtest case, each on a fresh mount.
func RunPosix(t *testing.T, mk StackFunc, opts layer.MountOptions) {
	for name, fn := range posixtest.All {
		t.Run(name, func(t *testing.T) {
			if why, ok := Skip[name]; ok {
				t.Skip(why)
			}
			mnt, _ := Mount(t, mk, opts)
			fn(t, mnt)
		})
	}
}

// Passthrough is a StackFunc for the passthrough alone.
func Passthrough(t testing.TB, backing string) *layer.Stack {
	pt, err := layer.NewPassthrough(backing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pt.Close() })
	st, err := layer.NewStack(nil, pt)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// RunExerciser runs Exercise for a few seeds, each on a fresh mount, with
// the local reference tree beside the backing dir (same file system).
func RunExerciser(t *testing.T, mk StackFunc, opts layer.MountOptions, steps int) {
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			mnt, _ := Mount(t, mk, opts)
			Exercise(t, t.TempDir(), mnt, seed, steps)
		})
	}
}

// Eventually polls cond until it returns "" and fails t with cond's last
// message after 10 s: a deadline for a hang, not a speed limit (changes
// made underneath show once the kernel's caches expire, 1 s by default).
func Eventually(t testing.TB, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		msg := cond()
		if msg == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
