package hsm

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/hsm")

// golden compares got with testdata/hsm/name: the on-disk formats are
// pinned, as gocryptfs pins its example file systems. A change of format
// must be a new version, never a silent change.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	p := filepath.Join("..", "testdata", "hsm", name)
	if *update {
		require.NoError(t, os.WriteFile(p, got, 0o644))
	}
	want, err := os.ReadFile(p)
	require.NoError(t, err, "run go test ./hsm -run Golden -update to create it")
	require.True(t, bytes.Equal(want, got), "%s changed: the format is pinned", name)
}

func goldenRecord() Record {
	var id ID
	for i := range id {
		id[i] = byte(i + 1)
	}
	var root [32]byte
	for i := range root {
		root[i] = byte(0xa0 + i)
	}
	return Record{State: Migrated, Flags: FlagPinned, ChunkShift: 20, ID: id, Size: 1<<40 + 3,
		Mtime: time.Unix(1700000000, 123456789), Root: root, Extents: 2}
}

func TestGoldenRecord(t *testing.T) {
	rec := goldenRecord()
	b, err := rec.MarshalBinary()
	require.NoError(t, err)
	require.Len(t, b, RecordSize)
	golden(t, "record-v1.bin", b)

	var got Record
	require.NoError(t, got.UnmarshalBinary(b))
	assert.True(t, got.Mtime.Equal(rec.Mtime))
	got.Mtime = rec.Mtime
	assert.Equal(t, rec, got)

	pinned := Record{State: Resident, Flags: FlagPinned}
	b, _ = pinned.MarshalBinary()
	golden(t, "record-v1-pinned-resident.bin", b)
}

func TestRecordRejectsDamage(t *testing.T) {
	rec := goldenRecord()
	good, _ := rec.MarshalBinary()
	cases := map[string]func([]byte) []byte{
		"bit flip":       func(b []byte) []byte { b[30] ^= 1; return b },
		"short":          func(b []byte) []byte { return b[:RecordSize-1] },
		"long":           func(b []byte) []byte { return append(b, 0) },
		"magic":          func(b []byte) []byte { b[0] = 'X'; return b },
		"future version": func(b []byte) []byte { b[4] = 2; return b },
		"empty":          func(b []byte) []byte { return nil },
	}
	for name, damage := range cases {
		b := damage(append([]byte(nil), good...))
		var r Record
		assert.ErrorIs(t, r.UnmarshalBinary(b), ErrBadRecord, name)
	}
	// A migrated record must carry an id (CRC fixed up, so only the
	// semantic check can catch it).
	bad := goldenRecord()
	bad.ID = ID{}
	b, _ := bad.MarshalBinary()
	var r Record
	assert.ErrorIs(t, r.UnmarshalBinary(b), ErrBadRecord)
}

func TestRecordStates(t *testing.T) {
	assert.Equal(t, "resident", Resident.String())
	assert.Equal(t, "premigrated", Premigrated.String())
	assert.Equal(t, "migrated", Migrated.String())
	r := Record{ChunkShift: 12, Size: 4097}
	assert.EqualValues(t, 2, r.Chunks())
	r.Size = 4096
	assert.EqualValues(t, 1, r.Chunks())
}

// TestGoldenObject pins the object format: data, hash list, extent map,
// footer, for a sparse file of three 4 KiB chunks.
func TestGoldenObject(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	fh, err := os.Create(p)
	require.NoError(t, err)
	data := bytes.Repeat([]byte("vfsfilter hsm\n"), 300) // 4200 bytes
	_, err = fh.WriteAt(data, 0)
	require.NoError(t, err)
	_, err = fh.WriteAt([]byte("end"), 3*4096+100) // a hole in between
	require.NoError(t, err)
	st, _ := fh.Stat()
	fd := int(fh.Fd())
	exts, err := dataExtents(fd, st.Size())
	require.NoError(t, err)
	if len(exts) == 2 {
		assert.Equal(t, []extent{{0, 8192}, {12288, 103}}, exts, "4 KiB blocks")
	}
	// The golden object must not depend on this file system's hole
	// granularity: pin the map.
	exts = []extent{{0, 8192}, {12288, 103}}
	rec := Record{State: Premigrated, ChunkShift: 12, Size: uint64(st.Size()), Extents: uint32(len(exts))}
	or := &objectReader{fd: fd, size: st.Size(), chunk: rec.ChunkSize(), exts: exts}
	obj, err := io.ReadAll(or)
	require.NoError(t, err)
	require.EqualValues(t, ObjectSize(&rec), len(obj))
	golden(t, "object-v1-sparse.bin", obj)
	fh.Close()

	rec.Root = rootOf(or.covered)
	idx, err := parseTrailer(&rec, obj[rec.Size:])
	require.NoError(t, err)
	assert.Len(t, idx.sums, 4)
	// The hole is where the file had it (ext4 and tmpfs report 4 KiB
	// granularity).
	for _, c := range []struct {
		off  int64
		data bool
		want int64
		ok   bool
	}{
		{5000, false, 8192, true}, {5000, true, 5000, true}, {9000, true, 12288, true},
		{9000, false, 9000, true}, {12300, false, 12391, true}, {12391, true, 0, false},
	} {
		got, ok := idx.seek(int64(rec.Size), c.off, c.data)
		assert.Equal(t, c.ok, ok, "%+v", c)
		if ok {
			assert.Equal(t, c.want, got, "%+v", c)
		}
	}
	// Any change of the trailer is caught.
	for i := int(rec.Size); i < len(obj); i += 7 {
		bad := append([]byte(nil), obj[rec.Size:]...)
		bad[i-int(rec.Size)] ^= 0x40
		_, err := parseTrailer(&rec, bad)
		assert.Error(t, err, "flip at %d", i)
	}
}
