package hsm

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// writeSeq writes data to fd from offset 0 in pieces, as cp or dd do.
func writeSeq(t *testing.T, fd *os.File, data []byte) {
	t.Helper()
	for off := 0; off < len(data); off += 64 << 10 {
		_, err := fd.Write(data[off:min(off+64<<10, len(data))])
		require.NoError(t, err)
	}
}

func TestFullOverwriteDoesNotRecall(t *testing.T) {
	r := newRig(t, rigOpts{chunk: 16})
	p := filepath.Join(r.mnt, "f")
	require.NoError(t, os.WriteFile(p, randBytes(300000), 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)
	// The store is gone: anything that recalled would fail.
	require.NoError(t, os.RemoveAll(r.storeDir))

	data := randBytes(300000)
	fd, err := os.OpenFile(p, os.O_WRONLY, 0)
	require.NoError(t, err)
	writeSeq(t, fd, data)
	require.NoError(t, fd.Close())
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(data, got), "content is the new data")
	assert.Equal(t, "resident", r.status(t, "f").State)
	assert.EqualValues(t, 0, r.f.recallsStarted.Load())
	r.f.mu.Lock()
	assert.Empty(t, r.f.overwrites)
	r.f.mu.Unlock()
}

func TestPartialOverwriteRecallsRest(t *testing.T) {
	r := newRig(t, rigOpts{chunk: 16})
	p := filepath.Join(r.mnt, "f")
	old := randBytes(300000)
	require.NoError(t, os.WriteFile(p, old, 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)

	half := randBytes(150000)
	fd, err := os.OpenFile(p, os.O_WRONLY, 0)
	require.NoError(t, err)
	writeSeq(t, fd, half)
	require.NoError(t, fd.Close())
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	want := append(append([]byte{}, half...), old[150000:]...)
	assert.True(t, bytes.Equal(want, got), "new first half, old second half")
	assert.Equal(t, "resident", r.status(t, "f").State)
}

func TestOverwriteThenRead(t *testing.T) {
	r := newRig(t, rigOpts{chunk: 16})
	p := filepath.Join(r.mnt, "f")
	old := randBytes(300000)
	require.NoError(t, os.WriteFile(p, old, 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)

	fd, err := os.OpenFile(p, os.O_RDWR, 0)
	require.NoError(t, err)
	defer fd.Close()
	_, err = fd.WriteAt([]byte("NEW PREFIX"), 0)
	require.NoError(t, err)
	r.f.mu.Lock()
	assert.Len(t, r.f.overwrites, 1, "the write went to an overwrite, not a recall")
	r.f.mu.Unlock()
	assert.EqualValues(t, 0, r.f.recallsStarted.Load())
	want := append([]byte("NEW PREFIX"), old[10:]...)
	// From another handle, then from the writer's.
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got), "new prefix, old rest")
	buf := make([]byte, len(old))
	n, err := fd.ReadAt(buf, 0)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, buf[:n]))
	// Writing on at the end of the prefix is an ordinary write now.
	_, err = fd.WriteAt([]byte("MORE"), 10)
	require.NoError(t, err)
	require.NoError(t, fd.Close())
	copy(want[10:], "MORE")
	got, err = os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(want, got))
	assert.Equal(t, "resident", r.status(t, "f").State)
}

func TestPartialOverwriteStoreDownEIO(t *testing.T) {
	r := newRig(t, rigOpts{chunk: 16})
	p := filepath.Join(r.mnt, "f")
	old := randBytes(300000)
	require.NoError(t, os.WriteFile(p, old, 0o644))
	require.Equal(t, OutMigrated, r.migrate(t, "f").Outcome)
	require.NoError(t, os.Rename(r.storeDir, r.storeDir+".away"))

	fd, err := os.OpenFile(p, os.O_WRONLY, 0)
	require.NoError(t, err)
	writeSeq(t, fd, randBytes(150000))
	assert.ErrorIs(t, fd.Close(), syscall.EIO)

	var bst unix.Stat_t
	require.NoError(t, unix.Stat(filepath.Join(r.backing, "f"), &bst))
	assert.EqualValues(t, 0, bst.Size, "stub unchanged")
	assert.Equal(t, "migrated", r.status(t, "f").State)

	require.NoError(t, os.Rename(r.storeDir+".away", r.storeDir))
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(old, got), "the stub recalls as it was")
}
