package hsm

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// recall brings one migrated file's data back, in place: the stub is
// extended to its real size (so every stat shows it at once and st_blocks
// grows as data arrives), chunks are fetched in order, each verified
// against the hash list before it is written, and the record flips to
// premigrated only after the data and its mtime are on disk. Readers wait
// for the chunks they need (or, far ahead, read the store directly), so the
// first byte of a large file costs one chunk.
//
// If anything fails (store down, object missing, checksum mismatch, the
// daemon stopping), the file is truncated back to an empty stub with its
// old mtime: the record never changed, so it is the stub it was.
type recall struct {
	f    *Filter
	rec  Record
	name string // for log lines

	// data is held (shared) by readers reading recalled bytes from the
	// backing file and (exclusive) by a failing recall while it truncates
	// the file back to a stub, so a read never sees the rollback.
	data sync.RWMutex

	mu       sync.Mutex
	mark     int64 // bytes [0, mark) are verified and written
	idx      *index
	finished bool
	err      error
	wake     chan struct{} // closed and replaced at every change
}

// inflight returns the recall in flight for id, or nil.
func (f *Filter) inflight(id ID) *recall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.recalls[id]
}

// recallFor returns the recall of the file behind fd (whose record is rec),
// starting it if none is in flight. Every reader of the file shares it.
func (f *Filter) recallFor(fd int, rec *Record) (*recall, error) {
	f.mu.Lock()
	if r := f.recalls[rec.ID]; r != nil {
		f.mu.Unlock()
		return r, nil
	}
	r := &recall{f: f, rec: *rec, wake: make(chan struct{})}
	f.recalls[rec.ID] = r
	f.mu.Unlock()
	// The reader's fd may be read-only and may be closed before the
	// recall ends: the recall keeps an fd of its own on the same inode.
	wfd, err := reopen(fd, unix.O_RDWR|unix.O_NOATIME)
	if err != nil {
		f.mu.Lock()
		delete(f.recalls, rec.ID)
		f.mu.Unlock()
		r.finish(err)
		return nil, err
	}
	r.name = fdName(wfd, f.cfg.Backing)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		defer unix.Close(wfd)
		err := r.run(wfd)
		switch {
		case err != nil && f.ctx.Err() != nil:
			// The mount is going away: not a failure of the store.
			f.log.Info("hsm: recall stopped by unmount; the stub is unchanged", "file", r.name)
		case err != nil:
			f.fail("recall failed; the stub is unchanged", r.name, err)
		}
		// Out of the map before waking the waiters: a reader that sees
		// the failure and retries starts a fresh recall.
		f.mu.Lock()
		delete(f.recalls, rec.ID)
		f.mu.Unlock()
		r.finish(err)
	}()
	return r, nil
}

// snapshot returns the recall's progress and a channel closed at its next
// change.
func (r *recall) snapshot() (mark int64, finished bool, err error, idx *index, wake <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.mark, r.finished, r.err, r.idx, r.wake
}

func (r *recall) changed() {
	close(r.wake)
	r.wake = make(chan struct{})
}

func (r *recall) finish(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished, r.err = true, err
	r.changed()
}

// wait blocks until the recall is finished and returns its error, or
// ctx's.
func (r *recall) wait(ctx context.Context) error {
	for {
		_, finished, err, _, wake := r.snapshot()
		if finished {
			return err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// stallTimer cancels a context when no progress was reported for d: a
// store that stops answering fails the recall after a bounded wait, while
// a slow but moving transfer of a large file is left alone.
type stallTimer struct {
	t *time.Timer
	d time.Duration
}

func newStallTimer(d time.Duration, cancel func()) *stallTimer {
	return &stallTimer{t: time.AfterFunc(d, cancel), d: d}
}

func (s *stallTimer) progress() { s.t.Reset(s.d) }
func (s *stallTimer) stop()     { s.t.Stop() }

func (r *recall) run(wfd int) (err error) {
	f := r.f
	cur, err := readRecordFd(wfd)
	if err != nil {
		return err
	}
	if cur == nil || cur.State != Migrated || cur.ID != r.rec.ID {
		// Another recall finished (or the file was rewritten) between
		// the reader's look at the record and ours.
		return nil
	}
	f.recallsStarted.Add(1)
	st, err := fstat(wfd)
	if err != nil {
		return err
	}
	mtime := st.Mtim
	size := int64(r.rec.Size)

	j, err := f.journalBegin(journalEntry{Op: "recall", ID: r.rec.ID.String(), Path: r.name, Mtime: mtime.Nano()})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// Back to the stub it was: empty, old mtime, same record.
			r.data.Lock()
			r.mu.Lock()
			r.err = err // readers that get the lock next see it
			r.mu.Unlock()
			defer r.data.Unlock()
			unix.Ftruncate(wfd, 0)
			f.sizes.forget(wfd)
			setMtime(wfd, mtime)
			unix.Fsync(wfd)
		}
		j.end()
	}()

	ctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	stall := newStallTimer(f.cfg.Timeout, cancel)
	defer stall.stop()

	idx, err := f.fetchIndex(ctx, &r.rec)
	if err != nil {
		return err
	}
	sums := idx.sums
	r.mu.Lock()
	r.idx = idx
	r.changed()
	r.mu.Unlock()

	if err := unix.Ftruncate(wfd, size); err != nil {
		return err
	}
	body, err := f.store.GetRange(ctx, r.rec.ID.String(), 0, size)
	if err != nil {
		return err
	}
	defer body.Close()

	// A pipeline, so that reading chunk i+2, hashing chunk i+1 and
	// writing chunk i overlap: reader -> (two hashers) -> writer, in
	// order. Hashing is the costliest step per byte, hence two hashers.
	cs := r.rec.ChunkSize()
	const inflight = 6
	type chunk struct {
		buf  []byte
		i    int64
		ok   chan bool // the hasher's verdict
		rerr error     // a read error ends the stream here
	}
	free := make(chan []byte, inflight)
	for i := 0; i < inflight; i++ {
		free <- make([]byte, cs)
	}
	ordered := make(chan *chunk, inflight)
	toHash := make(chan *chunk, inflight)
	go func() {
		defer close(ordered)
		defer close(toHash)
		for i := int64(0); i*cs < size; i++ {
			var buf []byte
			select {
			case buf = <-free:
			case <-ctx.Done():
				ordered <- &chunk{i: i, rerr: ctx.Err()}
				return
			}
			n := min(cs, size-i*cs)
			c := &chunk{buf: buf[:n], i: i, ok: make(chan bool, 1)}
			if _, err := io.ReadFull(body, c.buf); err != nil {
				c.rerr = fmt.Errorf("reading chunk %d: %w", i, ctxErr(ctx, err))
				ordered <- c
				return
			}
			stall.progress()
			ordered <- c
			toHash <- c
		}
	}()
	for h := 0; h < 2; h++ {
		go func() {
			for c := range toHash {
				c.ok <- sha256.Sum256(c.buf) == sums[c.i]
			}
		}()
	}
	// Write-behind: start the writeback of what is written every
	// flushEvery bytes, so the disk works while later chunks are read and
	// hashed and the final fdatasync has little left to do. (Only starts
	// I/O: the durability point is still the fdatasync below.)
	const flushEvery = 16 << 20
	var flushed int64
	var werr error
	for c := range ordered {
		switch {
		case werr != nil:
		case c.rerr != nil:
			werr = c.rerr
		case !<-c.ok:
			werr = fmt.Errorf("chunk %d (offset %d) does not match its checksum", c.i, c.i*cs)
		default:
			werr = writeExtents(wfd, c.buf, c.i*cs, idx.extents)
			if werr == nil {
				r.mu.Lock()
				r.mark = c.i*cs + int64(len(c.buf))
				r.changed()
				r.mu.Unlock()
				if end := c.i*cs + int64(len(c.buf)); end-flushed >= flushEvery || end == size {
					// Best effort: an error here shows at the fdatasync.
					unix.SyncFileRange(wfd, flushed, end-flushed, unix.SYNC_FILE_RANGE_WRITE)
					flushed = end
				}
			}
		}
		if werr != nil {
			cancel() // stops the reader; the loop drains what is queued
		}
		if c.buf != nil {
			free <- c.buf[:cap(c.buf)]
		}
	}
	if werr != nil {
		return werr
	}
	// Data and mtime durable before the record says so.
	if err := setMtime(wfd, mtime); err != nil {
		return err
	}
	if err := unix.Fdatasync(wfd); err != nil {
		return err
	}
	if err := f.ctx.Err(); err != nil {
		return err
	}
	pre := r.rec
	pre.State = Premigrated
	pre.Flags = cur.Flags
	pre.Mtime = time.Unix(mtime.Unix())
	err = writeRecordFd(wfd, &pre)
	f.sizes.forget(wfd)
	if err != nil {
		return err
	}
	return unix.Fsync(wfd)
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("%w (store stalled or daemon stopping)", ctx.Err())
	}
	return err
}

func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// writeExtents writes the parts of buf (file data at off) that lie in data
// extents; the rest stays a hole, as it was before migration.
func writeExtents(fd int, buf []byte, off int64, exts []extent) error {
	end := off + int64(len(buf))
	for _, e := range exts {
		s, t := max(e.off, off), min(e.off+e.len, end)
		if s >= t {
			if e.off >= end {
				break
			}
			continue
		}
		if err := pwriteAll(fd, buf[s-off:t-off], s); err != nil {
			return err
		}
	}
	return nil
}

// fetchIndex reads and checks an object's trailer (one ranged read).
func (f *Filter) fetchIndex(ctx context.Context, rec *Record) (*index, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	n := trailerSize(rec)
	rc, err := f.store.GetRange(ctx, rec.ID.String(), int64(rec.Size), n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, fmt.Errorf("reading the object's hash list: %w", ctxErr(ctx, err))
	}
	return parseTrailer(rec, b)
}

// readDirect serves a read far ahead of the recall straight from the
// store: the chunks covering [off, off+len(dest)), each verified.
func (r *recall) readDirect(ctx context.Context, sums [][hashSize]byte, dest []byte, off int64) (int, error) {
	f := r.f
	cs := r.rec.ChunkSize()
	size := int64(r.rec.Size)
	end := off + int64(len(dest))
	first, last := off/cs, (end-1)/cs
	start, stop := first*cs, min((last+1)*cs, size)
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	rc, err := f.store.GetRange(ctx, r.rec.ID.String(), start, stop-start)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	buf := make([]byte, stop-start)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return 0, ctxErr(ctx, err)
	}
	for i := first; i <= last; i++ {
		c := buf[(i-first)*cs : min((i-first+1)*cs, int64(len(buf)))]
		if sha256.Sum256(c) != sums[i] {
			return 0, fmt.Errorf("chunk %d (offset %d) does not match its checksum", i, i*cs)
		}
	}
	return copy(dest, buf[off-start:end-start]), nil
}

// Recall brings the data of the open file fd back and waits for it. The
// file ends premigrated (its data local and still in the store). A file
// that is not migrated is left as it is.
func (f *Filter) Recall(ctx context.Context, fd int) error {
	rec, err := readRecordFd(fd)
	if err != nil {
		return err
	}
	if rec == nil || rec.State != Migrated {
		return nil
	}
	r, err := f.recallFor(fd, rec)
	if err != nil {
		return err
	}
	if err := r.wait(ctx); err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("recall of %s from %s failed (the stub is unchanged): %w", r.name, f.store, err)
	}
	return nil
}
