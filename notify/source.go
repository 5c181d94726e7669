package notify

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vfsfilter/vfsfilter/layer"
)

// AltitudeSource is the Source filter's altitude: just above the
// passthrough (0) and below every filter that translates names or hides
// entries, so that the backing watch's events, published here in backing
// names, pass through all of them on their way up.
const AltitudeSource = 10

// Source is the bottom half of the notifier: a filter just above the
// passthrough that owns the watch on the backing directory. What the watch
// finds it publishes with Attachment.Publish, so the event travels up
// through every filter above (crypt decrypts names, namespace hides and
// renames) to the notify Filter at the top.
//
// Every op that reaches the backing directory passes through it: the
// user's, which the top filter reports, and the filters' own
// (Call.Internal). So it is here, where backing paths are known, that the
// watch's reports of the daemon's own changes are told apart from changes
// made by other programs (see ours and doc.go).
type Source struct {
	n     *Notifier
	att   *layer.Attachment
	mu    sync.Mutex
	w     watcher
	count atomic.Uint64
	last  layer.Event // last event published, to drop exact repeats (pmu)

	// The watch starts in Attach, bottom first: the filters above are
	// not attached yet, and their FilterEvent must not run before. Events
	// wait in held until the top Filter attached (open).
	pmu     sync.Mutex
	open    bool
	held    []layer.Event
	dropped bool // held overflowed: a rescan replaces what was lost

	// imprecise: the watch cannot tell the daemon's changes by pid
	// (inotify). Set in Attach before the watch starts, read-only after.
	imprecise bool

	fmu     sync.Mutex
	names   map[string]*nameExpect // by backing path; imprecise only
	files   map[string]*fileState  // by backing path
	sweepAt int
}

// nameExpect is a create, remove or rename the daemon is making or made
// (imprecise watch only).
type nameExpect struct {
	inflight int    // ops between pre- and post-callback
	kinds    uint32 // bit per layer.EventKind
	old      string // a rename's old name
	until    time.Time
}

// fileState is what the source knows of one backing file's content and
// attributes: modify and attrib reports of the watch are the daemon's own
// while it has the file open for writing, while one of its ops changes
// it, and afterwards as long as the file is as the daemon left it.
type fileState struct {
	path    string // backing path, kept across renames of the file (not of its directories)
	writers int    // handles open for writing by users (their writes may bypass the daemon: FUSE passthrough)
	// pids (fanotify only) are the processes that opened those handles
	// (FUSE pids: thread ids) or closed a descriptor of one (a child
	// that inherited it, which may be gone by the time its write is
	// read from the watch), kept until leftUntil after the last of them
	// was released: their writes are the mount's (FUSE passthrough
	// writes reach the backing file under the writer's pid), a change
	// by any other process is not (see ours).
	pids     []uint32
	handles  int // imprecise: every handle open through the source
	inflight int // imprecise: changing ops between pre- and post-callback
	// renaming (imprecise) counts the renames of the file in flight,
	// which preRename counts in inflight too, and postRename takes back.
	renaming int
	// ops (imprecise) counts the daemon's ops that change the file or
	// its names (an unlink, link or rename moves its ctime too).
	ops uint64
	// left is the file as the daemon's last change left it, until
	// leftUntil: a report that finds it so is the daemon's.
	left      fileStamp
	leftOK    bool
	leftUntil time.Time
	// loose (imprecise): until then every modify or attrib is the
	// daemon's (a read-only handle was closed: filters may still be
	// working on the file's fd, as an HSM recall does).
	loose time.Time
}

// fileStamp is what changes whenever a file changes: ctime moves on every
// change of data or metadata; size and mtime make it exact even within
// one tick of a coarse clock for appends and writes. ino tells a file
// replaced under the same name.
type fileStamp struct {
	ino, size    uint64
	mtime, ctime int64 // ns
}

func attrStamp(a *layer.Attr) fileStamp {
	return fileStamp{a.Ino, a.Size, int64(a.Mtime)*1e9 + int64(a.Mtimensec), int64(a.Ctime)*1e9 + int64(a.Ctimensec)}
}

func fdStamp(fd int) (fileStamp, bool) {
	var st unix.Stat_t
	if fd < 0 || unix.Fstat(fd, &st) != nil {
		return fileStamp{}, false
	}
	// As the passthrough reports it (layer.FillAttr); an entry on
	// another device inside the backing dir gets its ino mixed there
	// and reads as replaced here, which only drops a stale report.
	return fileStamp{st.Ino, uint64(st.Size), st.Mtim.Nano(), st.Ctim.Nano()}, true
}

// leave records st as the file as the daemon left it, for expectWindow
// from now, unless what is recorded is newer: stamps are taken outside
// s.fmu (an fstat, or an op's result), so one taken before another op's
// change can arrive after that op's own, and would make the watch's report
// of the change look like another program's. ctime moves forward on every
// change, so the larger one is the later file. s.fmu is held.
func (f *fileState) leave(st fileStamp, now time.Time) {
	if !f.leftOK || st.ino != f.left.ino || st.ctime >= f.left.ctime {
		f.left = st
	}
	f.leftOK, f.leftUntil = true, now.Add(expectWindow)
}

// sourceHandle is the source's context on an open file.
type sourceHandle struct {
	f        *fileState
	writable bool
	writer   bool // counted in f.writers
	counted  bool // counted in f.handles
	closed   bool // released: no longer counted
	// flushed (imprecise, users' writable handles) is the file as the
	// user's last close left it: FLUSH comes synchronously from every
	// close(2), after the writes made before it, while RELEASE comes
	// some time after the last close returned (see preRelease).
	flushed   fileStamp
	flushedOK bool
	flushOps  uint64 // fileState.ops at the last close
}

// watcher is a backing watch (fanotify or inotify).
type watcher interface {
	name() string
	// precise reports whether the watch tells the daemon's own changes
	// apart (fanotify, by pid). An imprecise one reports them too, and
	// the source drops them by what it expects (Source.ours).
	precise() bool
	close() error
}

// Name implements layer.Filter.
func (s *Source) Name() string { return "notify-source" }

// Altitude implements layer.Filter.
func (s *Source) Altitude() int { return AltitudeSource }

// Attach implements layer.Filter: it starts the backing watch and
// registers the callbacks that tell the daemon's own changes apart.
func (s *Source) Attach(a *layer.Attachment) error {
	s.att = a
	s.names = map[string]*nameExpect{}
	s.files = map[string]*fileState{}
	if s.n.opts.Backing == "" {
		return nil
	}
	root, err := filepath.EvalSymlinks(s.n.opts.Backing)
	if err != nil {
		return fmt.Errorf("notify: backing dir: %w", err)
	}
	var w watcher
	switch s.n.opts.Watcher {
	case "", "fanotify":
		w, err = startFanotify(root, s.emitBy, s.n.blind, s.n.log)
		if err == nil || s.n.opts.Watcher == "fanotify" {
			break
		}
		s.n.log.Info("fanotify unavailable; watching the backing dir with inotify, which cannot tell who made a change", "error", err)
		fallthrough
	case "inotify":
		s.imprecise = true // before the watch's goroutine starts
		w, err = startInotify(root, s.emit, s.n.blind, s.n.log)
	default:
		err = fmt.Errorf("unknown watcher %q", s.n.opts.Watcher)
	}
	if err != nil {
		return fmt.Errorf("notify: watch %s: %w", root, err)
	}
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
	s.register(a)
	return nil
}

// register installs the callbacks. Whatever the watch, users' handles
// open for writing are tracked (FUSE passthrough writes reach the backing
// file under the writer's pid, possibly after the close). With an
// imprecise watch, every change the daemon makes is: each op records what
// the watch will report of it before it runs (the watch may read it
// before the post-callback runs) and the file's state after it; each
// handle counts while it is open. Writes, fallocate and copy_file_range
// need no callback: they happen on a handle, which is open meanwhile and
// leaves its stamp when it is released. With fanotify, which drops the
// daemon's changes by pid, these callbacks would cost each op a map
// update and an fstat for nothing, so they are not registered.
func (s *Source) register(a *layer.Attachment) {
	layer.OnPost(a, s.postOpen)
	layer.OnPost(a, s.postCreate)
	layer.OnPre(a, s.preRelease)
	layer.OnPost(a, s.postRename)
	layer.OnPre(a, s.preFlush)
	if !s.imprecise {
		return
	}
	var (
		created = kindBits(layer.EventCreate)
		removed = kindBits(layer.EventRemove)
	)
	layer.OnPre(a, func(c *layer.Call, op *layer.CreateOp) (layer.Status, layer.Errno) {
		return s.pre(op.Path, created, true)
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.OpenOp) (layer.Status, layer.Errno) {
		if op.Flags&syscall.O_TRUNC != 0 && writable(op.Flags) {
			return s.pre(op.Path, 0, true)
		}
		return layer.Continue, 0
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.MknodOp) (layer.Status, layer.Errno) {
		return s.pre(op.Path, created, true)
	})
	layer.OnPost(a, func(c *layer.Call, op *layer.MknodOp, errno layer.Errno) layer.Errno {
		return s.post(op.Path, errno, created, attrStamp(&op.Out), true)
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.MkdirOp) (layer.Status, layer.Errno) {
		return s.pre(op.Path, created, true)
	})
	layer.OnPost(a, func(c *layer.Call, op *layer.MkdirOp, errno layer.Errno) layer.Errno {
		return s.post(op.Path, errno, created, attrStamp(&op.Out), true)
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.SymlinkOp) (layer.Status, layer.Errno) {
		return s.pre(op.Path, created, true)
	})
	layer.OnPost(a, func(c *layer.Call, op *layer.SymlinkOp, errno layer.Errno) layer.Errno {
		return s.post(op.Path, errno, created, attrStamp(&op.Out), true)
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.LinkOp) (layer.Status, layer.Errno) {
		s.fmu.Lock()
		s.touched(op.OldPath) // its ctime moves
		s.fmu.Unlock()
		return s.pre(op.NewPath, created, true)
	})
	layer.OnPost(a, func(c *layer.Call, op *layer.LinkOp, errno layer.Errno) layer.Errno {
		return s.post(op.NewPath, errno, created, attrStamp(&op.Out), true)
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.UnlinkOp) (layer.Status, layer.Errno) {
		return s.pre(op.Path, removed, false)
	})
	layer.OnPost(a, func(c *layer.Call, op *layer.UnlinkOp, errno layer.Errno) layer.Errno {
		return s.post(op.Path, errno, removed, fileStamp{}, false)
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.RmdirOp) (layer.Status, layer.Errno) {
		return s.pre(op.Path, removed, false)
	})
	layer.OnPost(a, func(c *layer.Call, op *layer.RmdirOp, errno layer.Errno) layer.Errno {
		return s.post(op.Path, errno, removed, fileStamp{}, false)
	})
	layer.OnPre(a, s.preRename)
	layer.OnPre(a, func(c *layer.Call, op *layer.SetattrOp) (layer.Status, layer.Errno) { return s.pre(op.Path, 0, true) })
	layer.OnPost(a, func(c *layer.Call, op *layer.SetattrOp, errno layer.Errno) layer.Errno {
		return s.post(op.Path, errno, 0, attrStamp(&op.Out), true)
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.SetxattrOp) (layer.Status, layer.Errno) { return s.pre(op.Path, 0, true) })
	layer.OnPost(a, func(c *layer.Call, op *layer.SetxattrOp, errno layer.Errno) layer.Errno {
		st, _ := s.statBelow(c, op.Path)
		return s.post(op.Path, errno, 0, st, true)
	})
	layer.OnPre(a, func(c *layer.Call, op *layer.RemovexattrOp) (layer.Status, layer.Errno) {
		return s.pre(op.Path, 0, true)
	})
	layer.OnPost(a, func(c *layer.Call, op *layer.RemovexattrOp, errno layer.Errno) layer.Errno {
		st, _ := s.statBelow(c, op.Path)
		return s.post(op.Path, errno, 0, st, true)
	})
}

func kindBits(kinds ...layer.EventKind) uint32 {
	var b uint32
	for _, k := range kinds {
		b |= 1 << k
	}
	return b
}

// expectWindow is how long the source waits for the backing watch to
// report a change the daemon made.
const expectWindow = 2 * time.Second

// statBelow returns the stamp of the backing file at path, asked of the
// passthrough (never through the mountpoint).
func (s *Source) statBelow(c *layer.Call, path string) (fileStamp, bool) {
	ctx := context.Background()
	if c != nil {
		ctx = c.Context
	}
	op := &layer.GetattrOp{Path: path}
	if s.att.Below.Do(layer.InternalCall(ctx), op) != 0 {
		return fileStamp{}, false
	}
	return attrStamp(&op.Out), true
}

// file returns the state of path, creating it. s.fmu is held.
func (s *Source) file(path string) *fileState {
	f := s.files[path]
	if f == nil {
		f = &fileState{path: path}
		s.files[path] = f
	}
	return f
}

// expectName records that the watch will report kinds on path. s.fmu is
// held.
func (s *Source) expectName(path string, kinds uint32, old string, now time.Time) *nameExpect {
	e := s.names[path]
	if e == nil {
		e = &nameExpect{}
		s.names[path] = e
	}
	if e.inflight == 0 && now.After(e.until) {
		*e = nameExpect{}
	}
	e.inflight++
	e.kinds |= kinds
	if old != "" {
		e.old = old
	}
	return e
}

// pre runs before an op that changes path: from now until its result is
// known, the watch's reports of kinds (and, with content, of modify and
// attrib) on path are the op's.
func (s *Source) pre(path string, kinds uint32, content bool) (layer.Status, layer.Errno) {
	now := time.Now()
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if kinds != 0 {
		s.expectName(path, kinds, "", now)
	}
	if content {
		s.file(path).inflight++
	}
	s.touched(path)
	return layer.Continue, 0
}

// touched counts an op of the daemon's on the file at path, if it is
// tracked. s.fmu is held.
func (s *Source) touched(path string) {
	if f := s.files[path]; f != nil {
		f.ops++
	}
}

// post ends what pre began: on success, the reports are expected for
// expectWindow more, and the file is as st says (when known).
func (s *Source) post(path string, errno layer.Errno, kinds uint32, st fileStamp, content bool) layer.Errno {
	now := time.Now()
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if kinds != 0 {
		if e := s.names[path]; e != nil {
			e.inflight--
			if errno == 0 {
				e.until = now.Add(expectWindow)
			}
		}
	}
	if content {
		if f := s.files[path]; f != nil {
			f.inflight--
			if errno == 0 && st != (fileStamp{}) {
				f.leave(st, now)
			}
		}
	}
	s.sweep(now)
	return errno
}

// preRename expects the rename, or its halves when the watch cannot pair
// them (a removal and a creation).
func (s *Source) preRename(c *layer.Call, op *layer.RenameOp) (layer.Status, layer.Errno) {
	now := time.Now()
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.expectName(op.NewPath, kindBits(layer.EventRename, layer.EventCreate), op.OldPath, now)
	s.expectName(op.OldPath, kindBits(layer.EventRemove), "", now)
	s.touched(op.OldPath)
	s.touched(op.NewPath)
	// A rename moves the file's ctime: while it runs, the watch's
	// reports of the file are the daemon's, as for any change.
	s.renaming(op.OldPath, 1)
	if op.Flags&unix.RENAME_EXCHANGE != 0 {
		s.expectName(op.OldPath, kindBits(layer.EventRename, layer.EventCreate), op.NewPath, now)
		s.expectName(op.NewPath, kindBits(layer.EventRemove), "", now)
		s.renaming(op.NewPath, 1)
	}
	return layer.Continue, 0
}

// renaming counts a rename of the tracked file at path in (d = 1, from
// preRename) or out (d = -1, postRename, with the file still under its
// old name). s.fmu is held.
func (s *Source) renaming(path string, d int) {
	f := s.files[path]
	if !s.imprecise || f == nil || d < 0 && f.renaming == 0 {
		return
	}
	f.renaming += d
	f.inflight += d
}

// postRename moves what is known of the files to their new names and, with
// an imprecise watch, ends what preRename began.
func (s *Source) postRename(c *layer.Call, op *layer.RenameOp, errno layer.Errno) layer.Errno {
	now := time.Now()
	s.fmu.Lock()
	defer s.fmu.Unlock()
	s.renaming(op.OldPath, -1)
	if op.Flags&unix.RENAME_EXCHANGE != 0 {
		s.renaming(op.NewPath, -1)
	}
	if s.imprecise {
		n := 2
		if op.Flags&unix.RENAME_EXCHANGE != 0 {
			n = 4
		}
		for _, p := range []string{op.NewPath, op.OldPath, op.OldPath, op.NewPath}[:n] {
			if e := s.names[p]; e != nil {
				e.inflight--
				if errno == 0 {
					e.until = now.Add(expectWindow)
				}
			}
		}
	}
	if errno != 0 {
		return errno
	}
	// Handles hold their fileState, not its name: moving it is enough.
	// The old name keeps a copy of the stamp, for the watch's reports
	// still queued under it. (Files below a renamed directory keep their
	// old names here.)
	from, to := s.files[op.OldPath], s.files[op.NewPath]
	delete(s.files, op.NewPath)
	if from != nil {
		from.path = op.NewPath
		s.files[op.NewPath] = from
		s.files[op.OldPath] = &fileState{path: op.OldPath, left: from.left, leftOK: from.leftOK, leftUntil: from.leftUntil, loose: from.loose}
	}
	if to != nil && op.Flags&unix.RENAME_EXCHANGE != 0 {
		to.path = op.OldPath
		s.files[op.OldPath] = to
	}
	return errno
}

// opened starts tracking a handle the layer below opened.
func (s *Source) opened(c *layer.Call, path string, flags uint32, h *layer.Handle, truncated bool) {
	if h == nil {
		return
	}
	w := writable(flags)
	user := w && !c.Internal
	if !user && !s.imprecise && !truncated {
		return
	}
	var st fileStamp
	if truncated || s.imprecise {
		st, _ = fdStamp(h.Fd)
	}
	now := time.Now()
	s.fmu.Lock()
	f := s.file(path)
	if truncated {
		f.inflight--
		if st != (fileStamp{}) {
			f.leave(st, now)
		}
	}
	if user || s.imprecise {
		sh := &sourceHandle{f: f, writable: w, writer: user, counted: s.imprecise}
		if user {
			if !s.imprecise {
				if f.writers == 0 && now.After(f.leftUntil) {
					f.pids = f.pids[:0]
				}
				f.addPid(c.Pid)
			}
			f.writers++
		}
		if s.imprecise {
			f.handles++
		}
		s.att.SetHandleContext(h, sh)
	}
	s.fmu.Unlock()
}

func (s *Source) postOpen(c *layer.Call, op *layer.OpenOp, errno layer.Errno) layer.Errno {
	trunc := s.imprecise && op.Flags&syscall.O_TRUNC != 0 && writable(op.Flags)
	if errno != 0 {
		if trunc {
			s.fmu.Lock()
			if f := s.files[op.Path]; f != nil {
				f.inflight--
			}
			s.fmu.Unlock()
		}
		return errno
	}
	s.opened(c, op.Path, op.Flags, op.Handle, trunc)
	return errno
}

func (s *Source) postCreate(c *layer.Call, op *layer.CreateOp, errno layer.Errno) layer.Errno {
	if s.imprecise {
		// The creation itself; the handle's stamp below.
		var st fileStamp
		if errno == 0 && op.Handle != nil {
			st, _ = fdStamp(op.Handle.Fd)
		}
		s.post(op.Path, errno, kindBits(layer.EventCreate), st, true)
	}
	if errno == 0 {
		s.opened(c, op.Path, op.Flags, op.Handle, false)
	}
	return errno
}

// preRelease ends a handle's part in the file's state, while its fd is
// still open: the watch may report the handle's writes after the close
// (FUSE passthrough writes come under the writer's pid), and those
// reports find the file as the handle left it, its stamp. A change by
// another program after the close changes the stamp and is reported. (Not
// at FLUSH: a shell's redirection closes a dup of the descriptor, a FLUSH,
// before writing anything.) A read-only handle, with inotify, leaves
// expectWindow in which modify and attrib are the daemon's: filters' work
// on its fd, such as an HSM recall, may end after the reader closed.
//
// With inotify, the kernel sending RELEASE some time after the last
// close(2) returned leaves a moment in which another program's change
// cannot be told from the handle's: the watch's report of it comes while
// the handle is open, and the stamp taken here includes it. The stamp of
// the user's last close (FLUSH) tells it: if the file changed after it,
// with this the only handle and no op of the daemon's since explaining
// it, another program changed it, and that change is published here, in
// place of the report the watch gave or will give (which the new stamp
// drops). The one write a handle can make after its last close, through
// a shared mapping still in place, is then reported twice, once as the
// mount's: a change reported twice is better than a change lost.
func (s *Source) preRelease(c *layer.Call, op *layer.ReleaseOp) (layer.Status, layer.Errno) {
	sh, _ := s.att.HandleContext(op.Handle).(*sourceHandle)
	if sh == nil {
		return layer.ContinueNoPost, 0
	}
	st, ok := fdStamp(op.Handle.Fd)
	now := time.Now()
	var late *layer.Event
	s.fmu.Lock()
	f := sh.f
	if !sh.closed {
		sh.closed = true
		if sh.writer {
			f.writers--
		}
		if sh.counted {
			f.handles--
		}
	}
	switch {
	case sh.writable && ok:
		if s.imprecise && sh.flushedOK && st != sh.flushed && st.ino == sh.flushed.ino &&
			f.handles == 0 && f.inflight == 0 && f.ops == sh.flushOps {
			late = &layer.Event{Kind: layer.EventAttrib, Path: f.path, Time: now}
			if st.size != sh.flushed.size || st.mtime != sh.flushed.mtime {
				late.Kind = layer.EventModify
			}
		}
		f.leave(st, now)
	case !sh.writable && s.imprecise:
		f.loose = now.Add(expectWindow)
	}
	s.sweep(now)
	s.fmu.Unlock()
	if late != nil {
		// The path is the file's unless a directory above it was
		// renamed meanwhile (fileState keeps the file's own renames
		// only): then what changed cannot be named here.
		if cur, ok := s.statBelow(c, late.Path); !ok || cur.ino != st.ino {
			*late = layer.Event{Kind: layer.EventRescan, Time: now}
		}
		s.publish(*late)
	}
	return layer.ContinueNoPost, 0
}

// maxPids bounds fileState.pids: a file held open while thousands of
// children come and go must not grow without bound; the oldest go.
const maxPids = 64

// addPid adds pid to f.pids. s.fmu is held.
func (f *fileState) addPid(pid uint32) {
	if slices.Contains(f.pids, pid) {
		return
	}
	if len(f.pids) == maxPids {
		f.pids = slices.Delete(f.pids, 0, 1)
	}
	f.pids = append(f.pids, pid)
}

// preFlush runs at each close(2) of a user's handle open for writing,
// synchronously, after the writes made before it. With fanotify it
// records who closed the descriptor: a process that wrote through it and
// exited is known by this pid when its write is read from the watch.
// With inotify it records the file as the close left it (see
// preRelease).
func (s *Source) preFlush(c *layer.Call, op *layer.FlushOp) (layer.Status, layer.Errno) {
	sh, _ := s.att.HandleContext(op.Handle).(*sourceHandle)
	if sh == nil || !sh.writer || c.Internal {
		return layer.ContinueNoPost, 0
	}
	if s.imprecise {
		// The stamp and the count of the daemon's ops must agree: an op
		// counted but not yet in the stamp would pass, at the release,
		// for another program's change. So the stamp is taken under
		// the lock that ops take before and after their change, and a
		// close during one of them records nothing to judge by.
		s.fmu.Lock()
		st, ok := fdStamp(op.Handle.Fd)
		sh.flushed, sh.flushedOK, sh.flushOps = st, ok && sh.f.inflight == 0, sh.f.ops
		s.fmu.Unlock()
		return layer.ContinueNoPost, 0
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	if !sh.closed {
		sh.f.addPid(c.Pid)
	}
	return layer.ContinueNoPost, 0
}

// sweep forgets what expired, when the maps have grown. s.fmu is held.
func (s *Source) sweep(now time.Time) {
	if len(s.files)+len(s.names) <= max(s.sweepAt, 1<<12) {
		return
	}
	for p, e := range s.names {
		if e.inflight == 0 && now.After(e.until) {
			delete(s.names, p)
		}
	}
	for p, f := range s.files {
		if f.writers == 0 && f.handles == 0 && f.inflight == 0 && now.After(f.leftUntil) && now.After(f.loose) {
			delete(s.files, p)
		}
	}
	s.sweepAt = 2 * (len(s.files) + len(s.names))
}

// ours reports whether ev, found by the watch, is the daemon's own change:
// made through the mount (the top filter reported it) or a filter's own
// work, which users never see. pid is the process that made the change
// (0: the watch cannot tell).
func (s *Source) ours(ev *layer.Event, pid int32) bool {
	now := time.Now()
	s.fmu.Lock()
	switch ev.Kind {
	case layer.EventCreate, layer.EventRemove, layer.EventRename:
		e := s.names[ev.Path]
		ok := s.imprecise && e != nil && e.kinds&(1<<ev.Kind) != 0 && (e.inflight > 0 || now.Before(e.until)) &&
			(ev.Kind != layer.EventRename || e.old == ev.OldPath)
		s.fmu.Unlock()
		return ok
	case layer.EventModify, layer.EventAttrib:
	default:
		s.fmu.Unlock()
		return false
	}
	f := s.files[ev.Path]
	if f == nil {
		s.fmu.Unlock()
		return false
	}
	if !s.imprecise && pid != 0 {
		// The watch names the process (fanotify), and the daemon's own
		// changes were dropped by it: what is left is a user's FUSE
		// passthrough write through a handle open for writing (or
		// just released: the watch may be read late), made by its
		// opener or a process that inherited the descriptor, or a
		// change by another program, which is reported even while the
		// file is open through the mount. (Judging by RELEASE and the
		// file's stamp lost changes made right after a close: the
		// kernel sends RELEASE after close(2) has returned, so the
		// stamp it takes may hold the other program's change.)
		if f.writers == 0 && !now.Before(f.leftUntil) {
			s.fmu.Unlock()
			return false
		}
		if slices.Contains(f.pids, uint32(pid)) {
			s.fmu.Unlock()
			return true
		}
		pids := slices.Clone(f.pids)
		s.fmu.Unlock()
		return writerProcess(pid, pids)
	}
	if f.writers > 0 || s.imprecise && (f.handles > 0 || f.inflight > 0 || now.Before(f.loose)) {
		// Open for writing through the mount (the close reports
		// it), or, when the watch cannot tell, being changed by the
		// daemon.
		s.fmu.Unlock()
		return true
	}
	left, check, ops := f.left, f.leftOK && now.Before(f.leftUntil), f.ops
	s.fmu.Unlock()
	if !check {
		return false
	}
	// The file as the daemon left it: the report is of that change. No
	// file there any more, or another one: the report is stale (it was
	// queued before the removal or replacement, whose own report follows
	// and tells what matters).
	cur, ok := s.statBelow(nil, ev.Path)
	if !ok || cur.ino != left.ino || cur == left {
		return true
	}
	// The file changed since. An op of the daemon's that began after
	// the look above (the stat runs outside the lock) explains that
	// change, and reports it itself; the watch's report is then one
	// of the daemon's changes, not another program's.
	s.fmu.Lock()
	defer s.fmu.Unlock()
	return f.ops != ops || f.inflight > 0
}

// emit publishes one event found underneath, in backing names, unless it
// is the daemon's own. It runs on the watch's goroutine only.
func (s *Source) emit(ev layer.Event) { s.emitBy(ev, 0) }

// emitBy is emit for a change the watch knows the maker of (pid; 0: not
// known).
func (s *Source) emitBy(ev layer.Event, pid int32) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if s.ours(&ev, pid) {
		return
	}
	s.publish(ev)
}

// publish sends up one change made by another program, in backing names.
// The watch's goroutine calls it, and preRelease for a change the watch
// could not tell from the daemon's.
func (s *Source) publish(ev layer.Event) {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	// A burst of writes underneath reads as many identical modify
	// events; within one batch of the watch (one read, one timestamp)
	// the first is enough: its invalidation of the kernel's caches
	// comes after the batch was read, so after every write it reports.
	// A later batch's must go up, whatever the time between: a write
	// after the first invalidation would otherwise stay unseen for as
	// long as the kernel caches (cmd/vfsfilter/caching.go keeps that
	// long). The kernel merges a file's repeated events while they
	// wait to be read, so a steady writer costs one event per batch.
	if ev.Kind == layer.EventModify && s.last.Kind == ev.Kind && s.last.Path == ev.Path && ev.Time.Equal(s.last.Time) {
		return
	}
	s.last = ev
	if !s.open {
		if len(s.held) < 1<<12 {
			s.held = append(s.held, ev)
		} else {
			s.dropped = true
		}
		return
	}
	s.count.Add(1)
	s.att.Publish(ev)
}

// openUp is called once the whole stack is attached (by the top Filter's
// Attach, and by Serve): the events held until then go up, in order.
func (s *Source) openUp() {
	s.pmu.Lock()
	defer s.pmu.Unlock()
	if s.open {
		return
	}
	s.open = true
	if s.att == nil {
		return
	}
	if s.dropped {
		s.held = append(s.held[:0], layer.Event{Kind: layer.EventRescan, Time: time.Now()})
	}
	for _, ev := range s.held {
		s.count.Add(1)
		s.att.Publish(ev)
	}
	s.held, s.dropped = nil, false
}

func (s *Source) watcherName() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return ""
	}
	return s.w.name()
}

func (s *Source) stop() error {
	s.mu.Lock()
	w := s.w
	s.w = nil
	s.mu.Unlock()
	if w == nil {
		return nil
	}
	return w.close()
}

// relPath returns p relative to root ("" for root) and whether p is inside.
func relPath(root, p string) (string, bool) {
	if p == root {
		return "", true
	}
	if len(p) > len(root) && p[:len(root)] == root && p[len(root)] == '/' {
		return p[len(root)+1:], true
	}
	if root == "/" && len(p) > 1 && p[0] == '/' {
		return p[1:], true
	}
	return "", false
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	if name == "" {
		return dir
	}
	return dir + "/" + name
}

// writerProcess reports whether process pid is one of the writers (FUSE
// pids are thread ids; the watch reports thread group ids), or a
// descendant of one, which may write through a descriptor it inherited. A
// process that is gone already cannot be placed here and counts as
// another program (a change reported twice is better than a change lost);
// a writer that exited is known by its FLUSH instead (preFlush).
func writerProcess(pid int32, writers []uint32) bool {
	for p, depth := pid, 0; p > 0 && depth < 32; depth++ {
		for _, w := range writers {
			if uint32(p) == w {
				return true
			}
			if _, err := os.Lstat(fmt.Sprintf("/proc/%d/task/%d", p, w)); err == nil {
				return true
			}
		}
		p = parentPid(p)
	}
	return false
}

// parentPid is the parent of process pid from /proc; 0 if not known
// (gone) or init.
func parentPid(pid int32) int32 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// "pid (comm) state ppid ...": comm may hold spaces and parentheses.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0
	}
	pp, err := strconv.Atoi(f[1])
	if err != nil || pp <= 1 {
		return 0
	}
	return int32(pp)
}
