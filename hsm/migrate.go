package hsm

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"github.com/vfsfilter/vfsfilter/layer"
	"io"
	"time"

	"golang.org/x/sys/unix"
)

// migration is a migration in flight, registered by inode so that opens
// of the file can see it.
type migration struct {
	// aborted: the file was opened during the copy; it must not lose its
	// local data under that open.
	aborted bool
	// releasing: past the point of no return; opens wait for done.
	releasing bool
	done      chan struct{}
}

// Outcome is what Migrate did with a file.
type Outcome string

// Outcomes of Migrate.
const (
	OutMigrated Outcome = "migrated"
	// OutPremigrated: copied and verified, but the file was opened
	// meanwhile, so its data stayed local. A later migration only has to
	// release it.
	OutPremigrated Outcome = "premigrated"
	OutSkipped     Outcome = "skipped"
)

// Skip reasons (Result.Reason) that are not errors.
var (
	ErrPinned   = errors.New("pinned")
	ErrMigrated = errors.New("already migrated")
	ErrOpen     = errors.New("open")
	ErrEmpty    = errors.New("empty")
	ErrChanged  = errors.New("changed during migration; stays resident")
	ErrNotFile  = errors.New("not a regular file")
	// ErrFrozen: the release truncates the data in place and a recall
	// writes it back, which these flags (chattr +i, +a) forbid.
	ErrFrozen = errors.New("immutable or append-only")
)

// Result is the outcome of one Migrate.
type Result struct {
	Outcome Outcome
	// Reason says why a file was skipped (one of the Err* values).
	Reason error
	Size   int64
}

// Migrate moves the data of the open file fd to the store, in two phases:
//
//  1. copy: the data goes to the store with a per-chunk hash list; the
//     object is checked in the store (size, hash list); if the file did
//     not change meanwhile, its record says premigrated.
//  2. release: if the file is still not open, the record says migrated,
//     then the local data is truncated away and the mtime restored.
//
// A file that is open (by any user handle), pinned, empty or already
// migrated is skipped; one that changes during the copy stays resident and
// its object is deleted. Every step is journaled (see journal.go), so a
// crash at any point leaves the file resident, premigrated or migrated,
// never without its data. progress, if not nil, is called with the bytes
// copied so far.
func (f *Filter) Migrate(ctx context.Context, fd int, progress func(int64)) (Result, error) {
	st, err := fstat(fd)
	if err != nil {
		return Result{}, err
	}
	res := Result{Size: st.Size}
	skip := func(why error) (Result, error) {
		res.Outcome, res.Reason = OutSkipped, why
		return res, nil
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return skip(ErrNotFile)
	}
	rec, err := readRecordFd(fd)
	if err != nil {
		return res, err
	}
	switch {
	case rec != nil && rec.Pinned():
		return skip(ErrPinned)
	case rec != nil && rec.State == Migrated:
		return skip(ErrMigrated)
	case st.Size == 0:
		return skip(ErrEmpty)
	case frozen(fd):
		return skip(ErrFrozen)
	}
	// close(2) waits for FLUSH but not for RELEASE, which the kernel
	// sends a moment later: a file closed just now gets a short grace.
	f.mu.Lock()
	f.graceLocked(func() bool { return f.opens[st.Ino] > 0 })
	if f.opens[st.Ino] > 0 || f.migrating[st.Ino] != nil {
		f.mu.Unlock()
		return skip(ErrOpen)
	}
	m := &migration{done: make(chan struct{})}
	f.migrating[st.Ino] = m
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.migrating, st.Ino)
		close(m.done)
		f.mu.Unlock()
	}()

	rfd, err := reopen(fd, unix.O_RDWR|unix.O_NOATIME)
	if err != nil {
		return res, err
	}
	defer unix.Close(rfd)
	name := fdName(rfd, f.cfg.Backing)

	if rec != nil && rec.State == Premigrated && rec.Size == uint64(st.Size) && rec.Mtime.Equal(time.Unix(st.Mtim.Unix())) {
		// Copied before; only the release is left.
		return f.release(m, rfd, name, rec, &st, res)
	}
	var old *Record
	if rec != nil && rec.State == Premigrated {
		old = rec // stale: changed behind our back; its object goes
	}

	id := NewID()
	j, err := f.journalBegin(journalEntry{Op: "migrate", ID: id.String(), Path: name})
	if err != nil {
		return res, err
	}
	keepObject := false
	defer func() {
		if !keepObject {
			dctx, cancel := context.WithTimeout(context.Background(), f.cfg.Timeout)
			if derr := f.store.Delete(dctx, id.String()); derr != nil {
				cancel()
				f.log.Warn("hsm: object of a failed migration not deleted; the next mount retries", "file", name, "err", derr)
				return // the journal entry stays for recovery
			}
			cancel()
		}
		j.end()
	}()

	newRec := Record{State: Premigrated, ChunkShift: f.cfg.ChunkShift, ID: id, Size: uint64(st.Size), Mtime: time.Unix(st.Mtim.Unix())}
	if rec != nil {
		newRec.Flags = rec.Flags
	}
	exts, err := dataExtents(rfd, st.Size)
	if err != nil {
		return res, err
	}
	newRec.Extents = uint32(len(exts))
	root, err := f.copyOut(ctx, rfd, &newRec, exts, progress)
	if err != nil {
		return res, fmt.Errorf("copy of %s to %s: %w", name, f.store, err)
	}
	newRec.Root = root
	if err := f.verifyObject(ctx, &newRec); err != nil {
		return res, fmt.Errorf("verify %s in %s: %w", name, f.store, err)
	}
	now, err := fstat(rfd)
	if err != nil {
		return res, err
	}
	f.mu.Lock()
	aborted := m.aborted
	f.mu.Unlock()
	if !sameContent(&st, &now) {
		return skip(ErrChanged)
	}
	if err := writeRecordFd(rfd, &newRec); err != nil {
		return res, err
	}
	if err := unix.Fsync(rfd); err != nil {
		return res, err
	}
	keepObject = true
	if old != nil {
		f.deleteObject(old.ID)
	}
	if aborted {
		res.Outcome = OutPremigrated
		return res, nil
	}
	st, err = fstat(rfd) // the record moved ctime
	if err != nil {
		return res, err
	}
	return f.release(m, rfd, name, &newRec, &st, res)
}

// release is phase 2: drop the local data of a premigrated file that no
// one has open.
func (f *Filter) release(m *migration, fd int, name string, rec *Record, st *unix.Stat_t, res Result) (Result, error) {
	f.mu.Lock()
	// A recall of this object that is finishing has flipped the record
	// to premigrated but is still in the table (its last fsync). A
	// reader that opened the file once it is a stub again would join
	// that recall and, trusting its mark, read the empty stub. So a
	// recall holds the file like an open, and like a file closed just
	// now it gets a short grace: whoever migrates right after reading
	// (the status already says premigrated) should not see a skip.
	f.graceLocked(func() bool { return f.recalls[rec.ID] != nil && !m.aborted && f.opens[st.Ino] == 0 })
	if m.aborted || f.opens[st.Ino] > 0 {
		f.mu.Unlock()
		res.Outcome = OutPremigrated
		return res, nil
	}
	if f.recalls[rec.ID] != nil {
		// Still recalling after the grace: the next round releases it.
		f.mu.Unlock()
		res.Outcome, res.Reason = OutSkipped, ErrOpen
		return res, nil
	}
	// From here on, opens of this inode wait until the file is a stub.
	m.releasing = true
	f.mu.Unlock()
	now, err := fstat(fd)
	if err != nil {
		return res, err
	}
	if !sameContent(st, &now) {
		res.Outcome, res.Reason = OutSkipped, ErrChanged
		return res, f.makeResident(fd)
	}
	j, err := f.journalBegin(journalEntry{Op: "migrate", ID: rec.ID.String(), Path: name})
	if err != nil {
		return res, err
	}
	defer j.end()
	// Record first, data second: a crash in between leaves a file that
	// says migrated and still has its data, which recovery (or a recall)
	// handles; the other order could leave an empty "premigrated" file.
	mig := *rec
	mig.State = Migrated
	if err := writeRecordFd(fd, &mig); err != nil {
		return res, err
	}
	if err := unix.Fsync(fd); err != nil {
		return res, err
	}
	err = unix.Ftruncate(fd, 0)
	f.sizes.forget(fd)
	if err != nil {
		return res, err
	}
	if err := setMtime(fd, st.Mtim); err != nil {
		return res, err
	}
	if err := unix.Fsync(fd); err != nil {
		return res, err
	}
	res.Outcome = OutMigrated
	return res, nil
}

// copyOut streams the file's data and its trailer to the store and returns
// the root hash.
func (f *Filter) copyOut(ctx context.Context, fd int, rec *Record, exts []extent, progress func(int64)) ([32]byte, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stall := newStallTimer(f.cfg.Timeout, cancel)
	defer stall.stop()
	or := &objectReader{fd: fd, size: int64(rec.Size), chunk: rec.ChunkSize(), exts: exts, progress: func(n int64) {
		stall.progress()
		if progress != nil {
			progress(n)
		}
	}}
	total := ObjectSize(rec)
	if err := f.store.Put(ctx, rec.ID.String(), or, total); err != nil {
		return [32]byte{}, ctxErr(ctx, err)
	}
	if or.err != nil {
		return [32]byte{}, or.err
	}
	if !or.trailerDone {
		return [32]byte{}, errors.New("store did not read the whole object")
	}
	return rootOf(or.covered), nil
}

// verifyObject checks the object in the store: its size, and its hash list
// against the root about to be recorded.
func (f *Filter) verifyObject(ctx context.Context, rec *Record) error {
	sctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	size, err := f.store.Stat(sctx, rec.ID.String())
	if err != nil {
		return err
	}
	if want := ObjectSize(rec); size != want {
		return fmt.Errorf("object is %d bytes, want %d", size, want)
	}
	_, err = f.fetchIndex(ctx, rec)
	return err
}

// objectReader produces an object: the file's data read with pread, then
// the hash list of its chunks and the footer.
type objectReader struct {
	fd       int
	size     int64
	chunk    int64
	progress func(int64)
	exts     []extent

	covered     []byte // hash list and extent map, once the data is read
	off         int64
	h           hashState
	list        []byte
	trailer     []byte
	trailerDone bool
	err         error
}

type hashState struct {
	inChunk int64
	sum     interface {
		io.Writer
		Sum([]byte) []byte
		Reset()
	}
}

func (o *objectReader) Read(p []byte) (int, error) {
	if o.err != nil {
		return 0, o.err
	}
	if o.off < o.size {
		if o.h.sum == nil {
			o.h.sum = sha256.New()
		}
		// Never read across a chunk boundary, so each chunk's sum is
		// closed exactly at its end.
		n := min(int64(len(p)), o.size-o.off, o.chunk-o.h.inChunk)
		got, err := unix.Pread(o.fd, p[:n], o.off)
		if err == unix.EINTR {
			return 0, nil
		}
		if err != nil {
			o.err = err
			return 0, err
		}
		if got == 0 {
			o.err = ErrChanged // the file shrank under us
			return 0, o.err
		}
		o.h.sum.Write(p[:got])
		o.off += int64(got)
		o.h.inChunk += int64(got)
		if o.h.inChunk == o.chunk || o.off == o.size {
			o.list = o.h.sum.Sum(o.list)
			o.h.sum.Reset()
			o.h.inChunk = 0
			if o.progress != nil {
				o.progress(o.off)
			}
		}
		return got, nil
	}
	if o.trailer == nil {
		var footer []byte
		o.covered, footer = encodeTrailer(o.list, o.exts, o.size)
		o.trailer = append(append([]byte(nil), o.covered...), footer...)
	}
	if len(o.trailer) == 0 {
		o.trailerDone = true
		return 0, io.EOF
	}
	n := copy(p, o.trailer)
	o.trailer = o.trailer[n:]
	if len(o.trailer) == 0 {
		o.trailerDone = true
	}
	return n, nil
}

// dataExtents lists the data regions of fd (SEEK_DATA/SEEK_HOLE), merged.
// A file system without hole support reports one extent: all data.
func dataExtents(fd int, size int64) ([]extent, error) {
	var exts []extent
	for off := int64(0); off < size; {
		d, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			return nil, err
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			return nil, err
		}
		h = min(h, size)
		if h <= d {
			break
		}
		if n := len(exts); n > 0 && exts[n-1].off+exts[n-1].len == d {
			exts[n-1].len += h - d
		} else {
			exts = append(exts, extent{d, h - d})
		}
		off = h
	}
	return exts, nil
}

// closeGrace bounds how long Migrate waits for a file that was in use a
// moment ago (a RELEASE in flight, a recall's last fsync) before it skips
// the file as open.
const closeGrace = 500 * time.Millisecond

// graceLocked waits, with f.mu held (and dropped while sleeping), up to
// closeGrace for busy to turn false. busy is evaluated under f.mu.
func (f *Filter) graceLocked(busy func() bool) {
	const step = 10 * time.Millisecond
	for waited := time.Duration(0); waited < closeGrace && busy(); waited += step {
		f.mu.Unlock()
		time.Sleep(step)
		f.mu.Lock()
	}
}

// frozen reports whether the file is immutable or append-only. A file
// system without inode flags has neither.
func frozen(fd int) bool {
	flags, err := unix.IoctlGetUint32(fd, layer.FsIocGetflags)
	return err == nil && flags&(layer.FsImmutableFl|layer.FsAppendFl) != 0
}
