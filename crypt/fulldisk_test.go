package crypt_test

import (
	"bytes"
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/layer/conformance"
	"golang.org/x/sys/unix"
)

// TestFullDisk: on a backing file system that fills up, writes and
// fallocate through crypt give ENOSPC; what was written before reads back
// intact, and the file that hit the limit reads back without an error (no
// torn ciphertext block is left behind) and holds a prefix of what was
// written to it.
func TestFullDisk(t *testing.T) {
	conformance.RequireFUSE(t)
	small := t.TempDir()
	conformance.SmallTmpfs(t, small, "1m")
	mnt := t.TempDir()
	srv, err := layer.Mount(mnt, cryptStack(t, small), layer.MountOptions{})
	if err != nil {
		t.Fatal(err)
	}
	conformance.UnmountAtEnd(t, srv)

	keep := bytes.Repeat([]byte("precious"), 1000) // a partial last block
	must(t, os.WriteFile(mnt+"/keep", keep, 0o644))
	must(t, os.WriteFile(mnt+"/sparse", nil, 0o644))
	must(t, os.Truncate(mnt+"/sparse", 512<<10))
	big := randBytes(4 << 20)
	err = os.WriteFile(mnt+"/big", big, 0o644)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing 4 MiB to a 1 MiB file system: %v, want ENOSPC", err)
	}
	got, err := os.ReadFile(mnt + "/keep")
	if err != nil || !bytes.Equal(got, keep) {
		t.Fatalf("earlier file after ENOSPC: %d bytes, %v", len(got), err)
	}
	got, err = os.ReadFile(mnt + "/big")
	if err != nil {
		t.Fatalf("the file that hit ENOSPC: %v", err)
	}
	if !bytes.Equal(got, big[:len(got)]) {
		t.Fatalf("the file that hit ENOSPC: %d bytes, not a prefix of what was written", len(got))
	}

	// With the disk full: appending past the partial last block of keep
	// (which pads that block first) and filling a hole of sparse both
	// fail or write a prefix; neither file is left damaged.
	for _, w := range []struct {
		name string
		off  int64
		old  []byte
	}{{"keep", int64(len(keep)) + 8192, keep}, {"sparse", 128 << 10, make([]byte, 512<<10)}} {
		f, err := os.OpenFile(mnt+"/"+w.name, os.O_RDWR, 0)
		must(t, err)
		data := randBytes(256 << 10)
		n, err := f.WriteAt(data, w.off)
		f.Close()
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("%s: writing 256 KiB on a full disk: %d, %v; want ENOSPC", w.name, n, err)
		}
		want := bytes.Clone(w.old)
		if n > 0 {
			want = append(want, make([]byte, max(0, int(w.off)+n-len(want)))...)
			copy(want[w.off:], data[:n])
		}
		got, err := os.ReadFile(mnt + "/" + w.name)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after ENOSPC: %d bytes (want %d), %v", w.name, len(got), len(want), err)
		}
	}

	// Extending keep by truncate pads its partial last block first; on a
	// full disk that fails and keep is as it was.
	before, err := os.ReadFile(mnt + "/keep")
	must(t, err)
	if err := os.Truncate(mnt+"/keep", 1<<20); err == nil {
		st, _ := os.Stat(mnt + "/keep")
		t.Logf("truncate up on a full disk succeeded (size %d)", st.Size())
	} else if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("truncate up on a full disk: %v, want ENOSPC or success", err)
	} else if got, err := os.ReadFile(mnt + "/keep"); err != nil || !bytes.Equal(got, before) {
		t.Fatalf("keep after a failed truncate: %d bytes, %v", len(got), err)
	}

	// fallocate beyond the free space: ENOSPC, and the size stays.
	f, err := os.OpenFile(mnt+"/keep", os.O_RDWR, 0)
	must(t, err)
	defer f.Close()
	st0, err := f.Stat()
	must(t, err)
	if err := unix.Fallocate(int(f.Fd()), 0, 0, 8<<20); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fallocate 8 MiB on a 1 MiB file system: %v, want ENOSPC", err)
	}
	st, err := f.Stat()
	must(t, err)
	if st.Size() != st0.Size() {
		t.Fatalf("size after a failed fallocate: %d, want %d", st.Size(), st0.Size())
	}
}
