package crypt_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/vfsfilter/vfsfilter/crypt"
	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"golang.org/x/sys/unix"
)

// TestWriteCacheAppends drives the write cache (the size and the partial
// last block kept from crypt's own last write) through a real mount:
// appending writes of odd sizes, most starting inside the partial last
// block, interleaved with reads, truncates with and without a handle,
// fallocate, hole punching, writes through a second handle, an O_APPEND
// handle and an O_TRUNC open. The file must read back byte for byte as a
// plain model of the same operations says, through the mount and through
// a fresh mount of the backing directory.
func TestWriteCacheAppends(t *testing.T) {
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	p := mnt + "/f"
	r := rand.New(rand.NewPCG(1, 2))
	sizes := []int{10240, 1, 4095, 4097, 10240, 4096, 3, 8191, 12289, 10240, 2, 4094}
	fill := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32()) | 1 // never zero: a lost write shows
		}
		return b
	}
	open := func(flags int) *os.File {
		f, err := os.OpenFile(p, flags, 0644)
		must(t, err)
		t.Cleanup(func() { f.Close() })
		return f
	}
	f1 := open(os.O_CREATE | os.O_RDWR | os.O_TRUNC)
	f2 := open(os.O_WRONLY)
	fa := open(os.O_WRONLY | os.O_APPEND)
	rd := open(os.O_RDONLY)
	var want []byte
	resize := func(n int) {
		if n <= len(want) {
			want = want[:n]
		} else {
			want = append(want, make([]byte, n-len(want))...)
		}
	}
	writeAt := func(f *os.File, data []byte, off int) {
		t.Helper()
		if _, err := f.WriteAt(data, int64(off)); err != nil {
			t.Fatalf("write %d at %d: %v", len(data), off, err)
		}
		if end := off + len(data); end > len(want) {
			resize(end)
		}
		copy(want[off:], data)
	}
	check := func(step int, what string) {
		t.Helper()
		st, err := rd.Stat()
		must(t, err)
		if st.Size() != int64(len(want)) {
			t.Fatalf("step %d (%s): size %d, want %d", step, what, st.Size(), len(want))
		}
		if len(want) == 0 {
			return
		}
		off := r.IntN(len(want))
		n := min(len(want)-off, 1+r.IntN(20000))
		got := make([]byte, n)
		if _, err := rd.ReadAt(got, int64(off)); err != nil {
			t.Fatalf("step %d (%s): read %d at %d: %v", step, what, n, off, err)
		}
		if !bytes.Equal(got, want[off:off+n]) {
			t.Fatalf("step %d (%s): %d bytes at %d differ", step, what, n, off)
		}
	}
	for i := range 400 {
		var what string
		switch {
		case i%97 == 96:
			what = "O_TRUNC open, write through it"
			f := open(os.O_WRONLY | os.O_TRUNC)
			want = want[:0]
			writeAt(f, fill(sizes[i%len(sizes)]), 0)
		case i%29 == 28:
			what = "fallocate extending"
			n := 1 + r.IntN(9000)
			must(t, unix.Fallocate(int(f1.Fd()), 0, int64(len(want)), int64(n)))
			resize(len(want) + n)
		case i%23 == 22 && len(want) > 0:
			off := r.IntN(len(want))
			n := 1 + r.IntN(len(want)-off)
			what = fmt.Sprintf("punch hole %d+%d", off, n)
			must(t, unix.Fallocate(int(f1.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(off), int64(n)))
			clear(want[off : off+n])
		case i%19 == 18:
			what = "truncate by path"
			n := r.IntN(len(want) + 5000)
			must(t, os.Truncate(p, int64(n)))
			resize(n)
		case i%11 == 10:
			what = "ftruncate"
			n := r.IntN(len(want) + 5000)
			must(t, f1.Truncate(int64(n)))
			resize(n)
		case i%17 == 16:
			what = "O_APPEND write"
			data := fill(sizes[i%len(sizes)])
			off := len(want)
			if _, err := fa.Write(data); err != nil {
				t.Fatal(err)
			}
			resize(off + len(data))
			copy(want[off:], data)
		case i%7 == 6:
			what = "append through a second handle"
			writeAt(f2, fill(sizes[i%len(sizes)]), len(want))
		case i%5 == 4 && len(want) > 0:
			what = "overwrite inside"
			writeAt(f1, fill(sizes[(i/5)%len(sizes)]), r.IntN(len(want)))
		case i%13 == 12 && len(want) > 0:
			what = "write inside the last block, not extending"
			off := len(want) - 1 - r.IntN(min(len(want), 4096))
			writeAt(f1, fill(min(len(want)-off, 1+r.IntN(100))), off)
		case i%31 == 30:
			what = "write past the end (a gap)"
			writeAt(f1, fill(sizes[i%len(sizes)]), len(want)+r.IntN(9000))
		default:
			what = "append"
			writeAt(f1, fill(sizes[i%len(sizes)]), len(want))
		}
		if i%3 == 0 || what != "append" {
			check(i, what)
		}
	}
	got, err := os.ReadFile(p)
	must(t, err)
	if !bytes.Equal(got, want) {
		t.Fatalf("through the mount: %d bytes, want %d (equal prefix %d)", len(got), len(want), commonPrefix(got, want))
	}
	got, err = os.ReadFile(mountAgain(t, backing, layer.MountOptions{}) + "/f")
	must(t, err)
	if !bytes.Equal(got, want) {
		t.Fatalf("through a fresh mount: %d bytes, want %d (equal prefix %d)", len(got), len(want), commonPrefix(got, want))
	}
}

// TestWriteCacheTailAfterTruncate: a truncate leaves a partial last block
// of the same length as the one the cache held, a write elsewhere follows
// (so the cache is refilled without the last block), then an append
// continues the new partial last block: it must be merged with that
// block's data, not with the block the cache held before the truncate.
func TestWriteCacheTailAfterTruncate(t *testing.T) {
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	f, err := os.OpenFile(mnt+"/f", os.O_CREATE|os.O_RDWR, 0644)
	must(t, err)
	defer f.Close()
	r := rand.New(rand.NewPCG(3, 4))
	want := make([]byte, 10000) // a partial last block of 1808 bytes
	for i := range want {
		want[i] = byte(r.Uint32())
	}
	_, err = f.WriteAt(want, 0)
	must(t, err)
	must(t, f.Truncate(10000-4096)) // again 1808 bytes, another block
	want = want[:10000-4096]
	_, err = f.WriteAt([]byte("0123456789"), 100)
	must(t, err)
	copy(want[100:], "0123456789")
	add := bytes.Repeat([]byte{'y'}, 3000)
	_, err = f.WriteAt(add, int64(len(want)))
	must(t, err)
	want = append(want, add...)
	for _, root := range []string{mnt, mountAgain(t, backing, layer.MountOptions{})} {
		got, err := os.ReadFile(root + "/f")
		must(t, err)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes, want %d (equal prefix %d)", root, len(got), len(want), commonPrefix(got, want))
		}
	}
}

// TestWriteCacheBelowChanges: a file open through the mount is truncated
// directly in the backing directory, then written through the open handle
// where the writer believes the end is. The write cache must notice (its
// size no longer matches) rather than write blocks that assume the old
// size: without the header (truncated to 0), or merged with the old
// partial last block it remembers (which is gone below).
func TestWriteCacheBelowChanges(t *testing.T) {
	for _, tc := range []struct {
		name  string
		below int64 // ciphertext size left below
		keep  int   // plaintext bytes that survive
	}{
		{"to zero", 0, 0},
		{"to one block", crypt.HeaderLen + 4096 + crypt.BlockOverhead, 4096},
		{"to two blocks", crypt.HeaderLen + 2*(4096+crypt.BlockOverhead), 8192},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
			f, err := os.OpenFile(mnt+"/f", os.O_CREATE|os.O_RDWR, 0644)
			must(t, err)
			defer f.Close()
			old := bytes.Repeat([]byte{'o'}, 10000)
			for off := 0; off < len(old); off += 2500 { // fills the cache
				_, err := f.WriteAt(old[off:off+2500], int64(off))
				must(t, err)
			}
			cfile := ciphertextFile(t, backing)
			must(t, os.Truncate(cfile, tc.below))
			add := bytes.Repeat([]byte{'n'}, 100)
			_, err = f.WriteAt(add, int64(len(old)))
			must(t, err)
			// What survived below, zeros up to where the write went
			// (never the old partial last block the cache held), and
			// the write.
			want := make([]byte, len(old)+len(add))
			copy(want, old[:tc.keep])
			copy(want[len(old):], add)
			got, err := os.ReadFile(mountAgain(t, backing, layer.MountOptions{}) + "/f")
			must(t, err)
			if !bytes.Equal(got, want) {
				t.Errorf("read back %d bytes, want %d (equal prefix %d)", len(got), len(want), commonPrefix(got, want))
			}
		})
	}
}

// ciphertextFile is the one file in backing besides IV files.
func ciphertextFile(t *testing.T, backing string) string {
	t.Helper()
	var found string
	filepath.Walk(backing, func(p string, fi os.FileInfo, err error) error {
		must(t, err)
		if fi.Mode().IsRegular() && fi.Name() != crypt.DirIVFile {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatal("no ciphertext file")
	}
	return found
}
