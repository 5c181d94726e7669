package hsm

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// XattrName is the extended attribute that holds a file's Record. The
// filter hides it from users: it is never listed, reads of it say ENODATA
// and writes or removals of it are refused with EPERM. trusted.* is
// readable and writable only with CAP_SYS_ADMIN, so no unprivileged
// process can forge or read a record in the backing directory either.
const XattrName = "trusted.vfsfilter.hsm"

// State is where a file's data lives.
type State uint8

const (
	// Resident: the data is local only. A file without a record is
	// resident; a record in this state exists only to carry the pinned
	// flag.
	Resident State = 0
	// Premigrated: the data is local and a verified copy is in the store.
	// Releasing the local data is then a metadata operation. A write (or
	// anything that changes the file) makes it resident again.
	Premigrated State = 1
	// Migrated: the object in the store is the data. The local file is a
	// stub: empty, or being refilled by a recall.
	Migrated State = 2
)

// String returns the name used by "vfsfilter hsm status".
func (s State) String() string {
	switch s {
	case Resident:
		return "resident"
	case Premigrated:
		return "premigrated"
	case Migrated:
		return "migrated"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// ID is a file's stable identity in the store. It is random, assigned at
// the first migration and kept by renames and links, so a renamed stub
// still finds its object.
type ID [16]byte

// NewID returns a random ID.
func NewID() ID {
	var id ID
	if _, err := rand.Read(id[:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return id
}

// String returns the id in hex, which is also its object key.
func (id ID) String() string { return hex.EncodeToString(id[:]) }

// IsZero reports whether id is unset.
func (id ID) IsZero() bool { return id == ID{} }

// Flags of a Record.
const (
	// FlagPinned: the file never migrates.
	FlagPinned uint8 = 1 << 0
)

// Record is the HSM state of one file, stored in XattrName.
type Record struct {
	State State
	Flags uint8
	// ChunkShift is log2 of the chunk size the object was written with;
	// each chunk has its own SHA-256 in the object's trailer.
	ChunkShift uint8
	ID         ID
	// Size is the file's real size, the one users see.
	Size uint64
	// Mtime is the file's modification time when its data was last known
	// to match the object. A premigrated file whose mtime or size differs
	// has been changed behind the filter's back and counts as resident.
	Mtime time.Time
	// Root is the SHA-256 of the object's chunk hash list and extent
	// map: it authenticates every chunk, so a recall can verify and serve
	// the first chunk before it has read the rest.
	Root [32]byte
	// Extents is the number of data extents in the object's extent map:
	// the file's data regions (SEEK_DATA/SEEK_HOLE) when it migrated, so
	// a recall restores its holes and a stub answers lseek as the file
	// did.
	Extents uint32
}

// Pinned reports whether the pinned flag is set.
func (r *Record) Pinned() bool { return r.Flags&FlagPinned != 0 }

// ChunkSize is the size of the object's chunks.
func (r *Record) ChunkSize() int64 { return 1 << r.ChunkShift }

// Chunks is the number of chunks of the data.
func (r *Record) Chunks() int64 { return chunkCount(int64(r.Size), r.ChunkSize()) }

// The record's binary layout, version 1, little endian, 84 bytes:
//
//	0  4  magic "VFSH"
//	4  1  format version (1)
//	5  1  state
//	6  1  flags
//	7  1  chunk shift
//	8  16 id
//	24 8  size
//	32 8  mtime, seconds since the epoch (signed)
//	40 4  mtime, nanoseconds
//	44 32 root hash
//	76 4  number of data extents
//	80 4  CRC-32C of bytes 0..79
//
// Binary rather than JSON: it is read on every lookup of an empty file and
// every open, and a fixed layout has one way to be valid. The CRC catches a
// torn or hand-edited attribute; a record that fails it is an error (EIO),
// never "resident", because a damaged stub read as resident would show an
// empty file.
const (
	recordMagic   = "VFSH"
	recordVersion = 1
	// RecordSize is the encoded size of a version 1 record.
	RecordSize = 84
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ErrBadRecord is returned (wrapped) for an attribute that is not a valid
// record: wrong magic, unknown version, bad length or checksum.
var ErrBadRecord = errors.New("damaged HSM record")

// MarshalBinary encodes r in the current format.
func (r *Record) MarshalBinary() ([]byte, error) {
	b := make([]byte, RecordSize)
	copy(b[0:4], recordMagic)
	b[4] = recordVersion
	b[5] = uint8(r.State)
	b[6] = r.Flags
	b[7] = r.ChunkShift
	copy(b[8:24], r.ID[:])
	binary.LittleEndian.PutUint64(b[24:32], r.Size)
	var sec int64
	var nsec uint32
	if !r.Mtime.IsZero() {
		sec, nsec = r.Mtime.Unix(), uint32(r.Mtime.Nanosecond())
	}
	binary.LittleEndian.PutUint64(b[32:40], uint64(sec))
	binary.LittleEndian.PutUint32(b[40:44], nsec)
	copy(b[44:76], r.Root[:])
	binary.LittleEndian.PutUint32(b[76:80], r.Extents)
	binary.LittleEndian.PutUint32(b[80:84], crc32.Checksum(b[:80], castagnoli))
	return b, nil
}

// UnmarshalBinary decodes a record, checking its magic, version and CRC.
func (r *Record) UnmarshalBinary(b []byte) error {
	if len(b) < 5 || string(b[0:4]) != recordMagic {
		return fmt.Errorf("%w: bad magic", ErrBadRecord)
	}
	if b[4] != recordVersion {
		return fmt.Errorf("%w: format version %d, this vfsfilter reads version %d", ErrBadRecord, b[4], recordVersion)
	}
	if len(b) != RecordSize {
		return fmt.Errorf("%w: %d bytes, want %d", ErrBadRecord, len(b), RecordSize)
	}
	if crc32.Checksum(b[:80], castagnoli) != binary.LittleEndian.Uint32(b[80:84]) {
		return fmt.Errorf("%w: checksum mismatch", ErrBadRecord)
	}
	st := State(b[5])
	if st > Migrated {
		return fmt.Errorf("%w: unknown state %d", ErrBadRecord, b[5])
	}
	if b[7] > 40 {
		return fmt.Errorf("%w: chunk shift %d", ErrBadRecord, b[7])
	}
	*r = Record{State: st, Flags: b[6], ChunkShift: b[7]}
	copy(r.ID[:], b[8:24])
	r.Size = binary.LittleEndian.Uint64(b[24:32])
	sec := int64(binary.LittleEndian.Uint64(b[32:40]))
	nsec := binary.LittleEndian.Uint32(b[40:44])
	if sec != 0 || nsec != 0 {
		r.Mtime = time.Unix(sec, int64(nsec))
	}
	copy(r.Root[:], b[44:76])
	r.Extents = binary.LittleEndian.Uint32(b[76:80])
	if st != Resident && r.ID.IsZero() {
		return fmt.Errorf("%w: %s without an id", ErrBadRecord, st)
	}
	return nil
}

// The object in the store is the file's data followed by a trailer:
//
//	data         Size bytes (holes read as zeros)
//	hash list    Chunks() SHA-256 sums, one per chunk of data
//	extent map   Extents pairs of (offset, length), 8 bytes each, little
//	             endian: the data regions; the rest are holes
//	footer       8 bytes magic "VFSHOBJ1", 8 bytes Size (little endian)
//
// The record's Root is the SHA-256 of hash list and extent map together. A
// recall reads the trailer first (one ranged read at offset Size), checks
// it against Root, and can then verify any chunk on its own: the first
// byte of a large file is served after one chunk, and a read far ahead is
// served by a ranged read of the chunks it needs. The footer lets a store
// be checked without the records (size and format are visible from the
// object alone).
const (
	objectMagic = "VFSHOBJ1"
	footerSize  = 16
	hashSize    = sha256.Size
	extentSize  = 16
	// DefaultChunkShift gives 1 MiB chunks: big enough that hashing and
	// per-chunk overheads vanish, small enough that a verified first byte
	// costs one chunk.
	DefaultChunkShift = 20
)

// extent is one data region of a file.
type extent struct{ off, len int64 }

// index is an object's verified trailer.
type index struct {
	sums    [][hashSize]byte
	extents []extent
}

func chunkCount(size, chunk int64) int64 { return (size + chunk - 1) / chunk }

// trailerSize is the size of the trailer of rec's object.
func trailerSize(rec *Record) int64 {
	return rec.Chunks()*hashSize + int64(rec.Extents)*extentSize + footerSize
}

// ObjectSize is the size of the object for rec.
func ObjectSize(rec *Record) int64 { return int64(rec.Size) + trailerSize(rec) }

// encodeTrailer returns the hash list and extent map (the part Root
// covers) and the footer.
func encodeTrailer(sums []byte, exts []extent, size int64) (covered, footer []byte) {
	covered = append([]byte(nil), sums...)
	for _, e := range exts {
		covered = binary.LittleEndian.AppendUint64(covered, uint64(e.off))
		covered = binary.LittleEndian.AppendUint64(covered, uint64(e.len))
	}
	footer = append([]byte(objectMagic), make([]byte, 8)...)
	binary.LittleEndian.PutUint64(footer[8:], uint64(size))
	return covered, footer
}

// rootOf returns the root hash of a trailer's covered part.
func rootOf(covered []byte) [32]byte { return sha256.Sum256(covered) }

// parseTrailer checks a trailer read from an object against rec.
func parseTrailer(rec *Record, b []byte) (*index, error) {
	if int64(len(b)) != trailerSize(rec) {
		return nil, fmt.Errorf("object trailer is %d bytes, want %d", len(b), trailerSize(rec))
	}
	n := rec.Chunks()
	covered, foot := b[:len(b)-footerSize], b[len(b)-footerSize:]
	if string(foot[:8]) != objectMagic || binary.LittleEndian.Uint64(foot[8:]) != rec.Size {
		return nil, errors.New("object footer does not match the stub (wrong object or damaged)")
	}
	if rootOf(covered) != rec.Root {
		return nil, errors.New("object trailer does not match the stub's checksum")
	}
	idx := &index{sums: make([][hashSize]byte, n), extents: make([]extent, rec.Extents)}
	for i := range idx.sums {
		copy(idx.sums[i][:], covered[int64(i)*hashSize:])
	}
	em := covered[n*hashSize:]
	var end int64
	for i := range idx.extents {
		e := extent{int64(binary.LittleEndian.Uint64(em[i*16:])), int64(binary.LittleEndian.Uint64(em[i*16+8:]))}
		if e.off < end || e.len <= 0 || e.off+e.len > int64(rec.Size) {
			return nil, errors.New("object extent map is invalid")
		}
		end = e.off + e.len
		idx.extents[i] = e
	}
	return idx, nil
}

// seek answers SEEK_DATA (data true) or SEEK_HOLE from off with the extent
// map, as the file system did for the file; ok is false for ENXIO.
func (x *index) seek(size, off int64, data bool) (int64, bool) {
	if off >= size || off < 0 {
		return 0, false
	}
	for _, e := range x.extents {
		if off < e.off {
			if data {
				return e.off, true
			}
			return off, true // in a hole
		}
		if off < e.off+e.len {
			if data {
				return off, true
			}
			return e.off + e.len, true
		}
	}
	if data {
		return 0, false
	}
	return off, true // in the hole at the end
}
