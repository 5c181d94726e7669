package fusectl

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// mountConn mounts an empty go-fuse file system served by the test
// process and returns its mountpoint and connection name.
func mountConn(t *testing.T) (string, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and not root: cannot mount")
		}
		t.Skip("needs root (mount, fusectl)")
	}
	mnt := t.TempDir()
	srv, err := gofs.Mount(mnt, &gofs.Inode{}, &gofs.Options{MountOptions: fuse.MountOptions{DirectMount: true}})
	require.NoError(t, err)
	t.Cleanup(func() {
		if srv.Unmount() != nil {
			unix.Unmount(mnt, unix.MNT_DETACH)
		}
		srv.Wait()
	})
	var st unix.Stat_t
	require.NoError(t, unix.Stat(mnt, &st))
	return mnt, strconv.FormatUint(uint64(unix.Minor(st.Dev)), 10)
}

// requireAborted checks that the mount at mnt answers ENOTCONN, as an
// aborted FUSE connection does.
func requireAborted(t *testing.T, mnt string) {
	t.Helper()
	var st unix.Stat_t
	err := unix.Stat(filepath.Join(mnt, "x"), &st)
	require.ErrorIs(t, err, syscall.ENOTCONN)
}

// TestAbort aborts through fusectl where it is mounted (the usual place,
// or, on a machine without it there, a private mount).
func TestAbort(t *testing.T) {
	mnt, conn := mountConn(t)
	require.NoError(t, Abort(conn))
	requireAborted(t, mnt)
	// Twice is fine.
	require.NoError(t, Abort(conn))
}

// TestAbortPrivateMount takes the path of a machine without fusectl at
// Dir: at a directory that is not fusectl, abort makes a mount of its own
// that no directory shows, and leaves no mount behind.
func TestAbortPrivateMount(t *testing.T) {
	mnt, conn := mountConn(t)
	notCtl := t.TempDir()
	require.False(t, Mounted(notCtl))
	before := fusectlMounts(t)
	require.NoError(t, abort(notCtl, conn))
	requireAborted(t, mnt)
	require.False(t, Mounted(notCtl))
	require.Equal(t, before, fusectlMounts(t), "abort left a fusectl mount behind")
}

// fusectlMounts counts the fusectl mounts this process sees.
func fusectlMounts(t *testing.T) int {
	b, err := os.ReadFile("/proc/self/mountinfo")
	require.NoError(t, err)
	return strings.Count(string(b), " - fusectl ")
}

func TestAbortMissingConnection(t *testing.T) {
	_, _ = mountConn(t) // fusectl has at least this one
	err := Abort("4294967295")
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.True(t, errors.Is(abort(t.TempDir(), "4294967295"), fs.ErrNotExist))
}

func TestAbortBadName(t *testing.T) {
	for _, c := range []string{"", ".", "..", "1/../2", "/etc"} {
		require.Error(t, Abort(c), c)
	}
}
