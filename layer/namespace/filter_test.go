package namespace_test

import (
	"errors"
	"os"
	"sort"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"github.com/vfsfilter/vfsfilter/layer/namespace"
	"golang.org/x/sys/unix"
)

// hide20 are twenty patterns that match none of posixtest's names, so the
// suite runs unchanged through a namespace filter that checks each of them.
var hide20 = []string{
	"*.swp", ".DS_Store", "node_modules", "build/tmp", "*.pyc", "__pycache__",
	"Thumbs.db", "*.orig", "*.rej", ".cache", "*~", ".#*", "*.bak", "core.*",
	"vendor/tmp", ".idea", ".vscode", "*.o", "*.class", "desktop.ini",
}

func stackWith(rules func(t testing.TB) *namespace.Rules) conformance.StackFunc {
	return func(t testing.TB, backing string) *layer.Stack {
		m, err := rules(t).Compile(namespace.CompileOptions{AlwaysHide: []string{".vfsfilter"}})
		require.NoError(t, err)
		ns, err := namespace.New(m)
		require.NoError(t, err)
		pt, err := layer.NewPassthrough(backing)
		require.NoError(t, err)
		st, err := layer.NewStack(nil, pt, ns)
		require.NoError(t, err)
		t.Cleanup(func() { st.Close() })
		return st
	}
}

var hideRules = hiding(hide20...)

// hiding returns rules that hide the patterns.
func hiding(patterns ...string) func(t testing.TB) *namespace.Rules {
	return func(t testing.TB) *namespace.Rules {
		r := &namespace.Rules{}
		for _, p := range patterns {
			require.NoError(t, r.AddHide(p))
		}
		return r
	}
}

func TestPosixHide20(t *testing.T) {
	conformance.RunPosix(t, stackWith(hideRules), layer.MountOptions{})
}

func TestScenariosHide20(t *testing.T) {
	conformance.RunScenarios(t, stackWith(hideRules), layer.MountOptions{})
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func errnoOf(err error) syscall.Errno {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	return 0
}

// TestHideIsConsistent: what a listing hides, lookup, open, create and
// rename hide too, and nothing reaches the backing dir.
func TestHideIsConsistent(t *testing.T) {
	mnt, backing := conformance.Mount(t, stackWith(func(t testing.TB) *namespace.Rules {
		r := &namespace.Rules{}
		require.NoError(t, r.AddHide("*.tmp"))
		require.NoError(t, r.AddHide("private/keys"))
		return r
	}), layer.MountOptions{})
	require.NoError(t, os.WriteFile(backing+"/a.tmp", []byte("x"), 0644))
	require.NoError(t, os.MkdirAll(backing+"/private/keys", 0755))
	require.NoError(t, os.WriteFile(backing+"/private/keys/k", []byte("k"), 0644))
	require.NoError(t, os.WriteFile(backing+"/ok", []byte("ok"), 0644))
	require.NoError(t, os.Mkdir(backing+"/.vfsfilter", 0700))

	assert.Equal(t, []string{"ok", "private"}, names(t, mnt))
	assert.Empty(t, names(t, mnt+"/private"))
	for _, p := range []string{"a.tmp", "private/keys", "private/keys/k", ".vfsfilter"} {
		_, err := os.Lstat(mnt + "/" + p)
		assert.Equal(t, syscall.ENOENT, errnoOf(err), "stat %s", p)
		_, err = os.Open(mnt + "/" + p)
		assert.Equal(t, syscall.ENOENT, errnoOf(err), "open %s", p)
	}
	err := os.WriteFile(mnt+"/new.tmp", nil, 0644)
	assert.Equal(t, syscall.EPERM, errnoOf(err), "create hidden name")
	assert.Equal(t, syscall.EPERM, errnoOf(os.Mkdir(mnt+"/d.tmp", 0755)), "mkdir hidden name")
	assert.Equal(t, syscall.EPERM, errnoOf(os.Symlink("x", mnt+"/l.tmp")), "symlink hidden name")
	assert.Equal(t, syscall.EPERM, errnoOf(os.Rename(mnt+"/ok", mnt+"/ok.tmp")), "rename onto hidden name")
	assert.Equal(t, syscall.EPERM, errnoOf(os.Link(mnt+"/ok", mnt+"/ok.tmp")), "link onto hidden name")
	assert.Equal(t, syscall.ENOENT, errnoOf(os.Rename(mnt+"/a.tmp", mnt+"/b")), "rename from hidden name")
	assert.Equal(t, syscall.ENOENT, errnoOf(os.Remove(mnt+"/a.tmp")), "unlink hidden")
	for _, p := range []string{"new.tmp", "d.tmp", "l.tmp", "ok.tmp", "b"} {
		_, err := os.Lstat(backing + "/" + p)
		assert.True(t, os.IsNotExist(err), "%s must not reach the backing dir", p)
	}
	got, err := os.ReadFile(backing + "/a.tmp")
	require.NoError(t, err)
	assert.Equal(t, "x", string(got), "hidden file untouched")
}

func TestRenameVirtualBind(t *testing.T) {
	other := t.TempDir()
	require.NoError(t, os.WriteFile(other+"/shared.txt", []byte("from elsewhere"), 0644))
	mnt, backing := conformance.Mount(t, stackWith(func(t testing.TB) *namespace.Rules {
		r := &namespace.Rules{}
		require.NoError(t, r.AddRename(namespace.RenameRule{Backing: "docs/README.txt", Visible: "docs/README.md"}))
		require.NoError(t, r.AddVirtual(namespace.VirtualRule{Path: "VERSION", Content: []byte("1.2.3\n")}))
		require.NoError(t, r.AddVirtual(namespace.VirtualRule{Path: "d/INFO", Content: []byte("i")}))
		require.NoError(t, r.AddHide("*.tmp"))
		require.NoError(t, r.AddBind(namespace.BindRule{Path: "ext", Source: other}))
		return r
	}), layer.MountOptions{})
	require.NoError(t, os.MkdirAll(backing+"/docs", 0755))
	require.NoError(t, os.WriteFile(backing+"/docs/README.txt", []byte("# hi\n"), 0644))

	// rename: visible under the new name only, everywhere.
	assert.Equal(t, []string{"README.md"}, names(t, mnt+"/docs"))
	got, err := os.ReadFile(mnt + "/docs/README.md")
	require.NoError(t, err)
	assert.Equal(t, "# hi\n", string(got))
	_, err = os.Stat(mnt + "/docs/README.txt")
	assert.Equal(t, syscall.ENOENT, errnoOf(err))
	assert.Equal(t, syscall.EPERM, errnoOf(os.WriteFile(mnt+"/docs/README.txt", nil, 0644)), "create the hidden backing name")
	require.NoError(t, os.WriteFile(mnt+"/docs/README.md", []byte("# changed\n"), 0644))
	got, _ = os.ReadFile(backing + "/docs/README.txt")
	assert.Equal(t, "# changed\n", string(got), "writes reach the backing name")

	// virtual: listed with its size, readable, read-only.
	assert.Equal(t, []string{"VERSION", "docs", "ext"}, names(t, mnt))
	st, err := os.Stat(mnt + "/VERSION")
	require.NoError(t, err)
	assert.EqualValues(t, 6, st.Size())
	assert.True(t, st.Mode().IsRegular())
	got, err = os.ReadFile(mnt + "/VERSION")
	require.NoError(t, err)
	assert.Equal(t, "1.2.3\n", string(got))
	assert.Equal(t, syscall.EROFS, errnoOf(os.WriteFile(mnt+"/VERSION", []byte("x"), 0644)))
	assert.Equal(t, syscall.EROFS, errnoOf(os.Remove(mnt+"/VERSION")))
	assert.Equal(t, syscall.EROFS, errnoOf(os.Chmod(mnt+"/VERSION", 0600)))
	_, err = os.Stat(mnt + "/VERSION/x")
	assert.Equal(t, syscall.ENOTDIR, errnoOf(err), "below a virtual file, as below any file")
	_, err = os.Lstat(backing + "/VERSION")
	assert.True(t, os.IsNotExist(err), "virtual file is not in the backing dir")

	// bind: the other directory's files, writable, renames across give EXDEV.
	assert.Equal(t, []string{"shared.txt"}, names(t, mnt+"/ext"))
	require.NoError(t, os.WriteFile(mnt+"/ext/new", []byte("n"), 0644))
	got, _ = os.ReadFile(other + "/new")
	assert.Equal(t, "n", string(got))
	assert.Equal(t, syscall.EXDEV, errnoOf(os.Rename(mnt+"/ext/new", mnt+"/new")))
	assert.Equal(t, syscall.EXDEV, errnoOf(os.Rename(mnt+"/docs/README.md", mnt+"/ext/r")))
	assert.Equal(t, syscall.EXDEV, errnoOf(os.Link(mnt+"/ext/new", mnt+"/hl")))
	require.NoError(t, os.Rename(mnt+"/ext/new", mnt+"/ext/renamed"))
	assert.Equal(t, syscall.EBUSY, errnoOf(os.Remove(mnt+"/ext")))
	require.NoError(t, os.WriteFile(other+"/junk.tmp", nil, 0644))
	assert.NotContains(t, names(t, mnt+"/ext"), "junk.tmp", "hide patterns apply inside binds, in listings too")
	require.NoError(t, os.Mkdir(backing+"/d", 0755))
	assert.Equal(t, syscall.ENOTEMPTY, errnoOf(syscall.Rmdir(mnt+"/d")), "a directory holding a virtual file is not empty")
	a, _ := os.Stat(mnt + "/ext/shared.txt")
	b, _ := os.Stat(mnt + "/docs/README.md")
	assert.NotEqual(t, a.Sys().(*syscall.Stat_t).Ino, b.Sys().(*syscall.Stat_t).Ino)
}

func TestExerciseHide20(t *testing.T) {
	conformance.RunExerciser(t, stackWith(hideRules), layer.MountOptions{}, 300)
}

// TestOpenFileOutlivesItsNameHidingDotfiles: with every dotfile hidden
// (a common rule), changes through the descriptors of open files whose
// names are gone still reach them: the bridge's name for a node without
// one starts with a dot, and must not be taken for a hidden entry.
func TestOpenFileOutlivesItsNameHidingDotfiles(t *testing.T) {
	mnt, backing := conformance.Mount(t, stackWith(hiding(".*")), layer.MountOptions{})
	conformance.Scenarios["OpenFileOutlivesItsName"](t, mnt, backing)
}

// TestHiddenStaysHiddenWhenOpen: an entry that becomes hidden (its
// directory renamed to where a rule hides it) stays hidden to changes by
// path, although it is open: the open file lends the bridge a handle for
// them, which must not let the change through.
func TestHiddenStaysHiddenWhenOpen(t *testing.T) {
	mnt, backing := conformance.Mount(t, stackWith(hiding("vault/f")), layer.MountOptions{})
	require.NoError(t, os.Mkdir(mnt+"/d", 0o755))
	require.NoError(t, os.WriteFile(mnt+"/d/f", []byte("x"), 0o644))
	f, err := os.Open(mnt + "/d/f")
	require.NoError(t, err)
	defer f.Close()
	require.NoError(t, os.Rename(mnt+"/d", mnt+"/vault"))
	require.ErrorIs(t, os.Chmod(mnt+"/vault/f", 0o600), syscall.ENOENT)
	require.ErrorIs(t, unix.Setxattr(mnt+"/vault/f", "user.k", []byte("v"), 0), syscall.ENOENT)
	st, err := os.Stat(backing + "/vault/f")
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), st.Mode().Perm(), "mode below")
}
