package layer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// scopeTree makes root/d/{a,b} with sizes 1 and 2 and returns a stack of
// a passthrough over root.
func scopeTree(t *testing.T) (root string, pt *Passthrough, st *Stack) {
	t.Helper()
	root = t.TempDir()
	require.NoError(t, os.Mkdir(filepath.Join(root, "d"), 0755))
	require.NoError(t, os.WriteFile(filepath.Join(root, "d", "a"), []byte("a"), 0644))
	require.NoError(t, os.WriteFile(filepath.Join(root, "d", "b"), []byte("bb"), 0644))
	pt, err := NewPassthrough(root)
	require.NoError(t, err)
	t.Cleanup(func() { pt.Close() })
	st, err = NewStack(nil, pt)
	require.NoError(t, err)
	return root, pt, st
}

func scopedLookup(st *Stack, ctx context.Context, path string) (Attr, Errno) {
	op := &LookupOp{Path: path}
	errno := st.Do(&Call{Context: ctx}, op)
	return op.Out, errno
}

func fdOpen(fd int) bool {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0)
	return err == nil
}

func inoOf(t *testing.T, path string) uint64 {
	t.Helper()
	var st unix.Stat_t
	require.NoError(t, unix.Lstat(path, &st))
	return st.Ino
}

// TestLookupScopeSharesDirectory: the lookups of one active scope resolve
// their directory once, and ending the scope closes the fd.
func TestLookupScopeSharesDirectory(t *testing.T) {
	root, pt, st := scopeTree(t)
	s := newLookupScope(context.Background())
	s.begin()
	a, errno := scopedLookup(st, s, "d/a")
	require.Zero(t, errno)
	assert.Equal(t, inoOf(t, root+"/d/a"), a.Ino)
	assert.Equal(t, uint64(1), a.Size)
	require.Equal(t, pt, s.slots[0].owner)
	require.Equal(t, "d", s.slots[0].dir)
	fd := s.slots[0].fd
	assert.Zero(t, s.slots[0].users, "released after the lookup")

	b, errno := scopedLookup(st, s, "d/b")
	require.Zero(t, errno)
	assert.Equal(t, uint64(2), b.Size)
	assert.Equal(t, fd, s.slots[0].fd, "the second lookup used the same resolution")
	assert.Nil(t, s.slots[1].owner, "and took no second slot")

	_, errno = scopedLookup(st, s, "d/missing")
	assert.Equal(t, syscall.ENOENT, errno)

	// Entries of the root need no resolution; names that are not plain
	// go the ordinary way.
	_, errno = scopedLookup(st, s, "d")
	require.Zero(t, errno)
	_, errno = scopedLookup(st, s, "d/..")
	require.Zero(t, errno)
	assert.Nil(t, s.slots[1].owner)

	s.finish()
	s.end()
	assert.False(t, fdOpen(fd), "ending the scope closes its fd")
	assert.Nil(t, s.slots[0].owner)
}

// TestLookupScopeServesOnlyWhileActive: a scope resolves and serves
// nothing outside a lookup of its request (a goroutine that kept the
// context) and nothing once its request is over.
func TestLookupScopeServesOnlyWhileActive(t *testing.T) {
	_, _, st := scopeTree(t)
	s := newLookupScope(context.Background())
	_, errno := scopedLookup(st, s, "d/a")
	require.Zero(t, errno)
	assert.Nil(t, s.slots[0].owner, "inactive: nothing kept")

	s.begin()
	_, errno = scopedLookup(st, s, "d/a")
	require.Zero(t, errno)
	fd := s.slots[0].fd
	s.finish()
	slot, _ := s.get(st.filters[0].(*Passthrough), "d")
	assert.Equal(t, -1, slot, "inactive: nothing served")

	s.end()
	assert.False(t, fdOpen(fd))
	s.begin() // a straggler after the request ended
	_, errno = scopedLookup(st, s, "d/a")
	require.Zero(t, errno, "an ended scope resolves from the root")
	assert.Nil(t, s.slots[0].owner, "and keeps nothing")
	s.finish()
}

// TestLookupScopeReleaseAfterEnd: a lookup still running when its scope
// ends keeps the fd open until it is done with it.
func TestLookupScopeReleaseAfterEnd(t *testing.T) {
	_, pt, st := scopeTree(t)
	s := newLookupScope(context.Background())
	s.begin()
	_, errno := scopedLookup(st, s, "d/a")
	require.Zero(t, errno)
	slot, fd := s.get(pt, "d")
	require.Equal(t, 0, slot)
	s.finish()
	s.end()
	assert.True(t, fdOpen(fd), "in use: not closed yet")
	s.release(slot)
	assert.False(t, fdOpen(fd), "closed by the last user")
}

// TestLookupScopeCannotEscape: a directory swapped for a symlink that
// leads out of the backing dir while a scope holds it is never followed:
// the rest of the request looks entries up in the directory that was there
// (a lookup without the scope at that instant would have used it too, had
// its openat2 come first), and the next request resolves from the root
// and refuses the symlink. Nothing outside is ever looked up.
func TestLookupScopeCannotEscape(t *testing.T) {
	root, _, st := scopeTree(t)
	outside := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(outside, "a"), []byte("outside a"), 0644))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "b"), []byte("outside b"), 0644))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "only-outside"), nil, 0644))
	outsideB := inoOf(t, outside+"/b")

	s := newLookupScope(context.Background())
	s.begin()
	_, errno := scopedLookup(st, s, "d/a")
	require.Zero(t, errno)

	require.NoError(t, os.Rename(root+"/d", root+"/d.old"))
	require.NoError(t, os.Symlink(outside, root+"/d"))

	b, errno := scopedLookup(st, s, "d/b")
	require.Zero(t, errno)
	assert.NotEqual(t, outsideB, b.Ino, "looked up outside the backing dir")
	assert.Equal(t, inoOf(t, root+"/d.old/b"), b.Ino)
	_, errno = scopedLookup(st, s, "d/only-outside")
	assert.Equal(t, syscall.ENOENT, errno, "an entry that exists only outside")
	s.finish()
	s.end()

	for _, ctx := range []context.Context{newLookupScope(context.Background()), context.Background()} {
		if s, ok := ctx.(*lookupScope); ok {
			s.begin()
		}
		b, errno := scopedLookup(st, ctx, "d/b")
		assert.NotZero(t, errno, "a new request follows the symlink (got ino %d)", b.Ino)
		_, errno = scopedLookup(st, ctx, "d/only-outside")
		assert.NotZero(t, errno)
	}
}

// TestLookupScopeMovedOutIsNotReused: a directory moved out of the backing
// dir after a request is not used by the next one.
func TestLookupScopeMovedOutIsNotReused(t *testing.T) {
	root, _, st := scopeTree(t)
	outside := t.TempDir()
	s := newLookupScope(context.Background())
	s.begin()
	_, errno := scopedLookup(st, s, "d/a")
	require.Zero(t, errno)
	s.finish()

	require.NoError(t, os.Rename(root+"/d", outside+"/d"))

	// The same request again (another lookup of it): still its own
	// directory, as an fd from its openat2 would be.
	s.begin()
	_, errno = scopedLookup(st, s, "d/b")
	assert.Zero(t, errno)
	s.finish()
	s.end()

	next := newLookupScope(context.Background())
	next.begin()
	defer func() { next.finish(); next.end() }()
	_, errno = scopedLookup(st, next, "d/b")
	assert.Equal(t, syscall.ENOENT, errno, "the next request resolves from the root")
}

// TestLookupScopePerPassthrough: two passthroughs in one request (a bind)
// each resolve their own directory; the same relative path names
// different directories under their roots.
func TestLookupScopePerPassthrough(t *testing.T) {
	root1, pt1, st1 := scopeTree(t)
	root2 := t.TempDir()
	require.NoError(t, os.Mkdir(root2+"/d", 0755))
	require.NoError(t, os.WriteFile(root2+"/d/a", []byte("longer"), 0644))
	pt2, err := NewPassthrough(root2)
	require.NoError(t, err)
	defer pt2.Close()
	st2, err := NewStack(nil, pt2)
	require.NoError(t, err)

	s := newLookupScope(context.Background())
	s.begin()
	defer func() { s.finish(); s.end() }()
	a1, errno := scopedLookup(st1, s, "d/a")
	require.Zero(t, errno)
	a2, errno := scopedLookup(st2, s, "d/a")
	require.Zero(t, errno)
	assert.Equal(t, inoOf(t, root1+"/d/a"), a1.Ino)
	assert.Equal(t, inoOf(t, root2+"/d/a"), a2.Ino)
	assert.Equal(t, pt1, s.slots[0].owner)
	assert.Equal(t, pt2, s.slots[1].owner)

	// A third directory finds no free slot and is resolved on its own.
	require.NoError(t, os.Mkdir(root1+"/e", 0755))
	require.NoError(t, os.WriteFile(root1+"/e/x", nil, 0644))
	_, errno = scopedLookup(st1, s, "e/x")
	require.Zero(t, errno)
	_, errno = scopedLookup(st1, s, "d/b")
	require.Zero(t, errno)
}

// spyFilter records whether the lookups that pass it run in a scope.
type spyFilter struct {
	mu            sync.Mutex
	scoped, plain int
	scopedDirs    map[string]bool // directories the scopes resolved
}

func (f *spyFilter) Name() string  { return "spy" }
func (f *spyFilter) Altitude() int { return 100 }
func (f *spyFilter) Attach(a *Attachment) error {
	OnPost(a, func(c *Call, op *LookupOp, errno Errno) Errno {
		f.mu.Lock()
		defer f.mu.Unlock()
		if s := scopeOf(c); s != nil {
			f.scoped++
			s.mu.Lock()
			for _, sl := range s.slots {
				if sl.owner != nil {
					f.scopedDirs[sl.dir] = true
				}
			}
			s.mu.Unlock()
		} else {
			f.plain++
		}
		return errno
	})
	return nil
}

func openFds(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	require.NoError(t, err)
	return len(ents)
}

// TestReaddirplusLookupsShareScope: through a real mount, the lookups of a
// READDIRPLUS reply run in the directory handle's scope and resolve the
// directory once; the scopes' fds are closed (no fd leaks after many
// listings), and entries looked up outside a listing take the usual way.
func TestReaddirplusLookupsShareScope(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE")
	}
	backing, mnt := t.TempDir(), t.TempDir()
	pt, err := NewPassthrough(backing)
	require.NoError(t, err)
	defer pt.Close()
	spy := &spyFilter{scopedDirs: map[string]bool{}}
	st, err := NewStack(nil, pt, spy)
	require.NoError(t, err)
	// Short timeouts: every listing asks the daemon again.
	srv, err := Mount(mnt, st, MountOptions{EntryTimeout: time.Nanosecond, AttrTimeout: time.Nanosecond})
	require.NoError(t, err)
	defer srv.Unmount()

	require.NoError(t, os.MkdirAll(mnt+"/x/y", 0755))
	for i := 0; i < 40; i++ {
		require.NoError(t, os.WriteFile(filepath.Join(mnt, "x/y", strings.Repeat("n", 1+i)), nil, 0644))
	}
	before := openFds(t)
	for i := 0; i < 30; i++ {
		f, err := os.Open(mnt + "/x/y")
		require.NoError(t, err)
		names, err := f.Readdirnames(-1)
		require.NoError(t, err)
		require.Len(t, names, 40)
		f.Close()
	}
	// Releasedir is sent in the background: give it a moment.
	deadline := time.Now().Add(5 * time.Second)
	for openFds(t) > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	assert.LessOrEqual(t, openFds(t), before+2, "fds of ended scopes are closed")

	spy.mu.Lock()
	scoped := spy.scoped
	dirs := spy.scopedDirs
	spy.mu.Unlock()
	assert.GreaterOrEqual(t, scoped, 40, "READDIRPLUS lookups run in a scope")
	assert.Equal(t, map[string]bool{"x/y": true}, dirs, "resolved the listed directory only")

	// A lookup outside a listing.
	spy.mu.Lock()
	plain := spy.plain
	spy.mu.Unlock()
	_, err = os.Lstat(mnt + "/x/y/not-there")
	assert.True(t, errors.Is(err, os.ErrNotExist))
	spy.mu.Lock()
	assert.Greater(t, spy.plain, plain)
	spy.mu.Unlock()
}

// BenchmarkReaddirplusLookups: the lookups of one READDIRPLUS reply of 64
// entries at depth 3, at the bottom of the stack, with and without a
// scope (one scope per reply, as the bridge makes them).
func BenchmarkReaddirplusLookups(b *testing.B) {
	root := b.TempDir()
	dir := "a/b/c"
	require.NoError(b, os.MkdirAll(filepath.Join(root, dir), 0755))
	var names []string
	for i := 0; i < 64; i++ {
		n := fmt.Sprintf("entry-%03d.go", i)
		names = append(names, dir+"/"+n)
		require.NoError(b, os.WriteFile(filepath.Join(root, dir, n), nil, 0644))
	}
	pt, err := NewPassthrough(root)
	require.NoError(b, err)
	defer pt.Close()
	st, err := NewStack(nil, pt)
	require.NoError(b, err)
	for _, scoped := range []bool{false, true} {
		b.Run(fmt.Sprintf("scoped=%v", scoped), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				var ctx context.Context = context.Background()
				var s *lookupScope
				if scoped {
					s = newLookupScope(ctx)
					ctx = s
				}
				for _, p := range names {
					if s != nil {
						s.begin()
					}
					op := &LookupOp{Path: p}
					if errno := st.Do(&Call{Context: ctx}, op); errno != 0 {
						b.Fatal(errno)
					}
					if s != nil {
						s.finish()
					}
				}
				s.end()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(names)), "ns/lookup")
		})
	}
}

// TestReaddirplusConcurrentChanges: listings of directories that are
// being filled, emptied and renamed at the same time, through the mount,
// give only entries that exist or existed (no error but ENOENT) and leave
// no fd behind.
func TestReaddirplusConcurrentChanges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE")
	}
	backing, mnt := t.TempDir(), t.TempDir()
	pt, err := NewPassthrough(backing)
	require.NoError(t, err)
	defer pt.Close()
	st, err := NewStack(nil, pt)
	require.NoError(t, err)
	srv, err := Mount(mnt, st, MountOptions{EntryTimeout: time.Nanosecond, AttrTimeout: time.Nanosecond})
	require.NoError(t, err)
	defer srv.Unmount()
	for _, d := range []string{"p/a", "p/b"} {
		require.NoError(t, os.MkdirAll(filepath.Join(mnt, d), 0755))
	}
	before := openFds(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	// Writers: create and remove files in p/a and p/b, and swap the two
	// directories by renames through p/tmp.
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			d := filepath.Join(mnt, "p", string(rune('a'+i%2)))
			f := filepath.Join(d, fmt.Sprintf("f%d", i%50))
			if err := os.WriteFile(f, nil, 0644); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs <- err
				return
			}
			if i%3 == 0 {
				os.Remove(f)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			os.Rename(mnt+"/p/a", mnt+"/p/tmp")
			os.Rename(mnt+"/p/b", mnt+"/p/a")
			os.Rename(mnt+"/p/tmp", mnt+"/p/b")
		}
	}()
	// Readers: list with attributes.
	for r := 0; r < 2; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				for _, d := range []string{"p/a", "p/b", "p"} {
					ents, err := os.ReadDir(filepath.Join(mnt, d))
					if err != nil && !errors.Is(err, os.ErrNotExist) {
						errs <- err
						return
					}
					for _, e := range ents {
						if _, err := e.Info(); err != nil && !errors.Is(err, os.ErrNotExist) {
							errs <- err
							return
						}
					}
				}
			}
		}()
	}
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for openFds(t) > before+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	assert.LessOrEqual(t, openFds(t), before+2, "fds of ended scopes are closed")
}
