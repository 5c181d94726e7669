package integration

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
	"golang.org/x/sys/unix"
)

// posixSkip lists the posixtest tests that are not run, with the reason.
// CI forbids skips with other reasons: every other test runs, every time.
var posixSkip = map[string]string{
	// The test is wrong, and go-fuse's own suite skips it ("TODO - fix
	// this test"): it expects a process's F_SETLK read lock on a second
	// fd to conflict with its own write lock on the first, but POSIX
	// record locks belong to the process, and ext4 grants it too.
	"FcntlFlockLocksFile": "broken test: expects a process's POSIX locks to conflict with each other",
}

// manyHides are 20 hide patterns of the kinds users write, none matching a
// name posixtest creates: the namespace filter is in the stack and
// consulted on every path, and must not change POSIX behaviour of the
// names it lets through.
var manyHides = []string{
	"*.bak", "*.swp", "*~", ".DS_Store", "Thumbs.db", "*.pyc", "__pycache__",
	".git", ".svn", ".hg", "node_modules", "*.o.tmp", "/secret", "build/output",
	"src/*/gen", "*.orig", "*.rej", "core.[0-9]*", ".#*", "#*#",
}

// TestPosix runs go-fuse's POSIX conformance tests against mounts made by
// the binary: once with the plain stack (passthrough only) and once with
// the namespace filter holding 20 hide rules. Each test gets a fresh
// backing directory and mount, as go-fuse's own TestPosix does: the tests
// expect an empty directory and some (FdLeak) count descriptors.
//
// The backing directories are on a tmpfs of the test's own: posixtest
// skips tests whose feature the backing file system lacks (XAttrLarge
// needs 8 KiB xattrs, which ext4 with 4 KiB blocks refuses), and every
// test must run. The script tests cover backing directories on the
// ordinary temporary directory.
func TestPosix(t *testing.T) {
	requireFUSE(t)
	tmpfs := t.TempDir()
	if err := unix.Mount("tmpfs", tmpfs, "tmpfs", 0, "size=512m,mode=0755"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", tmpfs, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(tmpfs, 0); err != nil {
			t.Errorf("unmount tmpfs: %v", err)
			unix.Unmount(tmpfs, unix.MNT_DETACH)
		}
	})
	var hideArgs []string
	for _, h := range manyHides {
		hideArgs = append(hideArgs, "--hide", h)
	}
	configs := []struct {
		name string
		args []string
	}{
		{"plain", nil},
		{"hide20", hideArgs},
	}
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, cfg := range configs {
		t.Run(cfg.name, func(t *testing.T) {
			for _, name := range names {
				t.Run(name, func(t *testing.T) {
					if why, ok := posixSkip[name]; ok {
						t.Skip(why) // the only skip; go-fuse skips it too
					}
					t.Cleanup(func() {
						if t.Skipped() {
							t.Errorf("posixtest skipped %s; every test but those of posixSkip must run", name)
						}
					})
					dir, err := os.MkdirTemp(tmpfs, name+"-")
					if err != nil {
						t.Fatal(err)
					}
					backing, mnt := filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
					for _, d := range []string{backing, mnt} {
						if err := os.Mkdir(d, 0o755); err != nil {
							t.Fatal(err)
						}
					}
					mountDaemon(t, backing, mnt, cfg.args...)
					posixtest.All[name](t, mnt)
				})
			}
		})
	}
}
