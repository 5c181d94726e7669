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
