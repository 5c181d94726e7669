package conformance

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// Exercise is a file-system exerciser in the spirit of fsx: it applies one
// random sequence of operations to a directory on the local file system
// (ref) and to the same-named directory through the stack (dir), and after
// every step compares the errno each side returned and the files' sizes and
// contents. Any divergence is a bug in the stack (SEEK_DATA and SEEK_HOLE
// may differ in how they report zeros: see seekAgrees). seed makes a
// failure reproducible.
func Exercise(t *testing.T, ref, dir string, seed uint64, steps int) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	names := []string{"a", "b", "c", "sub/d"}
	for _, root := range []string{ref, dir} {
		must(t, os.MkdirAll(root+"/sub", 0755))
	}
	type pair struct{ r, d *os.File }
	open := map[string]pair{}
	defer func() {
		for _, p := range open {
			p.r.Close()
			p.d.Close()
		}
	}()
	// both runs f on the reference and the stack and compares the outcome.
	both := func(what string, f func(root string, fd *os.File) (int, error), name string) {
		t.Helper()
		var fr, fd *os.File
		if p, ok := open[name]; ok {
			fr, fd = p.r, p.d
		}
		nr, er := f(ref, fr)
		nd, ed := f(dir, fd)
		if errnoOf(er) != errnoOf(ed) || nr != nd {
			t.Fatalf("seed %d: %s: local gave (%d, %v), stack gave (%d, %v)", seed, what, nr, er, nd, ed)
		}
	}
	for step := 0; step < steps; step++ {
		name := names[rng.IntN(len(names))]
		off := int64(rng.IntN(3 << 20))
		n := 1 + rng.IntN(256<<10)
		switch op := rng.IntN(11); op {
		case 0: // open (create) a file and keep it open
			if _, ok := open[name]; ok {
				continue
			}
			var r, d *os.File
			both("open "+name, func(root string, _ *os.File) (int, error) {
				f, err := os.OpenFile(root+"/"+name, os.O_RDWR|os.O_CREATE, 0644)
				if root == ref {
					r = f
				} else {
					d = f
				}
				return 0, err
			}, name)
			if r != nil && d != nil {
				open[name] = pair{r, d}
			}
		case 1, 2: // write
			if _, ok := open[name]; !ok {
				continue
			}
			buf := make([]byte, n)
			for i := range buf {
				buf[i] = byte(rng.IntN(256))
			}
			both(fmt.Sprintf("pwrite %s %d@%d", name, n, off), func(_ string, f *os.File) (int, error) {
				return f.WriteAt(buf, off)
			}, name)
		case 3: // truncate
			if _, ok := open[name]; !ok {
				continue
			}
			both(fmt.Sprintf("ftruncate %s %d", name, off), func(_ string, f *os.File) (int, error) {
				return 0, f.Truncate(off)
			}, name)
		case 4: // fallocate in its modes
			if _, ok := open[name]; !ok {
				continue
			}
			modes := []uint32{0, unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, unix.FALLOC_FL_ZERO_RANGE}
			mode := modes[rng.IntN(len(modes))]
			both(fmt.Sprintf("fallocate %s mode %#x %d@%d", name, mode, n, off), func(_ string, f *os.File) (int, error) {
				return 0, unix.Fallocate(int(f.Fd()), mode, off, int64(n))
			}, name)
		case 5: // copy_file_range between two open files
			other := names[rng.IntN(len(names))]
			src, ok1 := open[name]
			dst, ok2 := open[other]
			if !ok1 || !ok2 {
				continue
			}
			offOut := int64(rng.IntN(1 << 20))
			nr, er := copyRange(src.r, dst.r, off, offOut, n)
			nd, ed := copyRange(src.d, dst.d, off, offOut, n)
			if errnoOf(er) != errnoOf(ed) || nr != nd {
				t.Fatalf("seed %d: copy_file_range %s->%s: local (%d, %v), stack (%d, %v)", seed, name, other, nr, er, nd, ed)
			}
		case 6: // rename to another of the names
			other := names[rng.IntN(len(names))]
			both("rename "+name+" "+other, func(root string, _ *os.File) (int, error) {
				return 0, os.Rename(root+"/"+name, root+"/"+other)
			}, name)
		case 7: // link
			other := names[rng.IntN(len(names))]
			both("link "+name+" "+other, func(root string, _ *os.File) (int, error) {
				return 0, os.Link(root+"/"+name, root+"/"+other)
			}, name)
		case 8: // unlink (open files stay usable)
			both("unlink "+name, func(root string, _ *os.File) (int, error) {
				return 0, os.Remove(root + "/" + name)
			}, name)
		case 9: // close
			if p, ok := open[name]; ok {
				p.r.Close()
				p.d.Close()
				delete(open, name)
			}
		case 10: // seek data/hole
			if _, ok := open[name]; !ok {
				continue
			}
			whence := unix.SEEK_DATA
			if rng.IntN(2) == 0 {
				whence = unix.SEEK_HOLE
			}
			// Not with both: the answers may differ across zeros.
			p := open[name]
			or, er := unix.Seek(int(p.r.Fd()), off, whence)
			od, ed := unix.Seek(int(p.d.Fd()), off, whence)
			if !seekAgrees(p.r, whence, off, or, er, od, ed) {
				t.Fatalf("seed %d: lseek %s %d whence %d: local gave (%d, %v), stack gave (%d, %v)", seed, name, off, whence, or, er, od, ed)
			}
		}
		// Compare every open file (through its fd, so unlinked files count)
		// and every name.
		for nm, p := range open {
			compareFd(t, seed, step, nm, p.r, p.d)
		}
		for _, nm := range names {
			a, ea := os.ReadFile(ref + "/" + nm)
			b, eb := os.ReadFile(dir + "/" + nm)
			if errnoOf(ea) != errnoOf(eb) || !bytes.Equal(a, b) {
				t.Fatalf("seed %d step %d: %s differs: local %d bytes (%v), stack %d bytes (%v)", seed, step, nm, len(a), ea, len(b), eb)
			}
		}
	}
}

// seekAgrees reports whether the stack's answer to lseek(off, whence)
// (od, ed) is as good as the local file system's (or, er) for the local
// file f, whose contents the stack's file has (that is checked after every
// step). The answers must be the same, or differ only in how zeros are
// reported: ext4 itself reports an unwritten extent (what fallocate
// leaves) as a hole, or as data once a read has brought its pages into the
// page cache, so no stack can match it op by op there. What must hold
// always: SEEK_DATA skips nothing but zeros (ENXIO only if zeros run to the
// end), and SEEK_HOLE lands in zeros (to the end of their 4 KiB block) or
// at the end of the file.
func seekAgrees(f *os.File, whence int, off, or int64, er error, od int64, ed error) bool {
	if errnoOf(er) == errnoOf(ed) && or == od {
		return true
	}
	st, err := f.Stat()
	if err != nil {
		return false
	}
	size := st.Size()
	if off >= size || ed != nil && errnoOf(ed) != syscall.ENXIO {
		return false // ENXIO past the end, and no other error, on both sides
	}
	switch {
	case whence == unix.SEEK_DATA && ed != nil:
		return zerosBetween(f, off, size)
	case whence == unix.SEEK_DATA:
		return od >= off && od < size && zerosBetween(f, off, od)
	case ed != nil || od < off || od > size:
		return false
	case od == size:
		return true
	}
	return zerosBetween(f, od, min(size, (od/4096+1)*4096))
}

// zerosBetween reports whether the bytes of f in [a, b) all read as zeros.
func zerosBetween(f *os.File, a, b int64) bool {
	buf := make([]byte, b-a)
	n, _ := f.ReadAt(buf, a)
	return n == len(buf) && !slices.ContainsFunc(buf, func(c byte) bool { return c != 0 })
}

func copyRange(src, dst *os.File, offIn, offOut int64, n int) (int, error) {
	return unix.CopyFileRange(int(src.Fd()), &offIn, int(dst.Fd()), &offOut, n, 0)
}

func compareFd(t *testing.T, seed uint64, step int, name string, r, d *os.File) {
	t.Helper()
	var sr, sd unix.Stat_t
	must(t, unix.Fstat(int(r.Fd()), &sr))
	must(t, unix.Fstat(int(d.Fd()), &sd))
	if sr.Size != sd.Size || sr.Nlink != sd.Nlink {
		t.Fatalf("seed %d step %d: open %s: local size %d nlink %d, stack size %d nlink %d", seed, step, name, sr.Size, sr.Nlink, sd.Size, sd.Nlink)
	}
	a := make([]byte, sr.Size)
	b := make([]byte, sd.Size)
	if _, err := r.ReadAt(a, 0); err != nil && sr.Size > 0 {
		t.Fatalf("read local %s: %v", name, err)
	}
	if _, err := d.ReadAt(b, 0); err != nil && sd.Size > 0 {
		t.Fatalf("read stack %s: %v", name, err)
	}
	if !bytes.Equal(a, b) {
		i := 0
		for i < len(a) && a[i] == b[i] {
			i++
		}
		t.Fatalf("seed %d step %d: open %s: contents differ from byte %d", seed, step, name, i)
	}
}

func errnoOf(err error) syscall.Errno {
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	if err != nil {
		return syscall.EIO // io.EOF and friends: compared as one class
	}
	return 0
}
