package crypt_test

import (
	"bytes"
	"fmt"
	"os"
	"testing"

	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"golang.org/x/sys/unix"
)

// TestPunchHoleRanges punches ranges that start and end at every kind of
// place (inside a block, on a boundary, across one boundary with no whole
// block between, over the partial last block) and checks that exactly the
// range reads as zeros, through the mount and through a fresh mount.
func TestPunchHoleRanges(t *testing.T) {
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	const size = 5*4096 + 1000
	data := bytes.Repeat([]byte{0xa5}, size)
	type rng struct{ off, n int }
	ranges := []rng{
		{100, 200},                // inside block 0
		{1771, 5393},              // across one boundary, no whole block
		{4095, 2},                 // the two bytes around a boundary
		{4096, 4096},              // one whole block
		{3000, 6000},              // partial, whole, partial
		{8192, 100},               // the start of a block
		{5 * 4096, 1000},          // the whole partial last block
		{5*4096 + 10, 990},        // the end of the partial last block
		{2, size - 4},             // nearly everything
		{4096 - 1, 4096 + 2 + 10}, // partial, whole, partial (small)
	}
	for i, r := range ranges {
		t.Run(fmt.Sprintf("%d+%d", r.off, r.n), func(t *testing.T) {
			p := fmt.Sprintf("%s/f%d", mnt, i)
			must(t, os.WriteFile(p, data, 0644))
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			must(t, err)
			defer f.Close()
			must(t, unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, int64(r.off), int64(r.n)))
			want := bytes.Clone(data)
			clear(want[r.off : r.off+r.n])
			for _, root := range []string{mnt, mountAgain(t, backing, layer.MountOptions{})} {
				got, err := os.ReadFile(fmt.Sprintf("%s/f%d", root, i))
				must(t, err)
				if !bytes.Equal(got, want) {
					t.Errorf("%s: %d bytes, equal prefix %d of %d", root, len(got), commonPrefix(got, want), len(want))
				}
			}
		})
	}
}

// commonPrefix is the length of the longest common prefix of a and b.
func commonPrefix(a, b []byte) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// TestFallocateModes: fallocate reserves ciphertext without writing it, so
// holes stay holes (SEEK_DATA skips them, as ext4 skips the unwritten
// extents of its own fallocate) and read as zeros; ZERO_RANGE zeroes
// exactly its range, also when it extends the file past a partial last
// block; the file's other bytes never change.
func TestFallocateModes(t *testing.T) {
	mnt, backing := conformance.Mount(t, cryptStack, layer.MountOptions{})
	const size = 3*4096 + 1000 // a partial last block
	data := bytes.Repeat([]byte{0x5a}, size)
	cases := []struct {
		name     string
		mode     uint32
		off, n   int
		wantSize int
		zero     [2]int // the range that must read as zeros
	}{
		{"allocate-extend", 0, size - 10, 1 << 20, size - 10 + 1<<20, [2]int{size, size - 10 + 1<<20}},
		{"allocate-keep-size", unix.FALLOC_FL_KEEP_SIZE, 100, 1 << 20, size, [2]int{0, 0}},
		{"zero-range-extend", unix.FALLOC_FL_ZERO_RANGE, 2*4096 + 7, 3 * 4096, 5*4096 + 7, [2]int{2*4096 + 7, 5*4096 + 7}},
		{"zero-range-inside", unix.FALLOC_FL_ZERO_RANGE, 100, 2 * 4096, size, [2]int{100, 100 + 2*4096}},
	}
	// Where the backing file system has no ZERO_RANGE (tmpfs), neither
	// has crypt.
	probe, err := os.CreateTemp(backing, "probe")
	must(t, err)
	zeroRangeBelow := unix.Fallocate(int(probe.Fd()), unix.FALLOC_FL_ZERO_RANGE, 0, 4096) == nil
	probe.Close()
	os.Remove(probe.Name())
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := fmt.Sprintf("%s/f%d", mnt, i)
			must(t, os.WriteFile(p, data, 0644))
			f, err := os.OpenFile(p, os.O_RDWR, 0)
			must(t, err)
			defer f.Close()
			err = unix.Fallocate(int(f.Fd()), tc.mode, int64(tc.off), int64(tc.n))
			if tc.mode == unix.FALLOC_FL_ZERO_RANGE && !zeroRangeBelow {
				if err != unix.EOPNOTSUPP {
					t.Fatalf("ZERO_RANGE over a file system without it: %v, want EOPNOTSUPP", err)
				}
				return
			}
			must(t, err)
			want := make([]byte, tc.wantSize)
			copy(want, data)
			clear(want[tc.zero[0]:tc.zero[1]])
			for _, root := range []string{mnt, mountAgain(t, backing, layer.MountOptions{})} {
				got, err := os.ReadFile(fmt.Sprintf("%s/f%d", root, i))
				must(t, err)
				if !bytes.Equal(got, want) {
					t.Errorf("%s: %d bytes (want %d), equal prefix %d", root, len(got), len(want), commonPrefix(got, want))
				}
			}
			// What was allocated past the old data (from the block
			// after the old partial last one) is a hole.
			const from = 4 * 4096
			off, err := unix.Seek(int(f.Fd()), from, unix.SEEK_DATA)
			if tc.wantSize > from && err != unix.ENXIO {
				t.Errorf("SEEK_DATA from %d: %d, %v; want ENXIO (allocated or zeroed, never written)", from, off, err)
			}
		})
	}
	// The space is reserved below: the ciphertext of a 64 MiB allocation
	// takes its blocks at once.
	p := mnt + "/big"
	f, err := os.Create(p)
	must(t, err)
	defer f.Close()
	must(t, unix.Fallocate(int(f.Fd()), 0, 0, 64<<20))
	ents, err := os.ReadDir(backing)
	must(t, err)
	var blocks int64
	for _, e := range ents {
		var st unix.Stat_t
		if unix.Stat(backing+"/"+e.Name(), &st) == nil && st.Size > 64<<20 {
			blocks = st.Blocks * 512
		}
	}
	if blocks < 64<<20 {
		t.Errorf("64 MiB allocated through the mount reserve %d bytes below", blocks)
	}
	if off, err := unix.Seek(int(f.Fd()), 0, unix.SEEK_DATA); err != unix.ENXIO {
		t.Errorf("SEEK_DATA in an allocated, never written file: %d, %v; want ENXIO", off, err)
	}
}
