package notify

import (
	"encoding/binary"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vfsfilter/vfsfilter/layer"
)

// fanWatcher watches the backing directory with fanotify. A filesystem mark
// (FAN_MARK_FILESYSTEM) sees every change on the backing directory's file
// system, recursively and without a watch per directory, and each event
// carries the pid of the process that made it: the daemon's own changes
// (those made through the mount, already reported by the notify filter,
// and the filters' own work such as HSM recalls) are dropped by pid, as a
// Windows HSM service's own writes are. Events name the changed entry by
// its directory's file handle and its name (FAN_REPORT_DFID_NAME); the
// directory's path comes from a map of handles kept current as
// directories are created, renamed and removed, or from open_by_handle_at.
// Changes elsewhere on the file system are dropped.
//
// A directory handle that neither the map nor open_by_handle_at can place
// (the directory is gone) is one elsewhere on the file system: every
// directory inside the tree is in the map, from the walk at the start or
// from the event that made it or moved it in, unless it was gone before
// that event was read. Those, the lost directories, are remembered by path
// until their removal is read; while there are any, a handle that cannot
// be placed may be one of them, and each becomes a rescan of its subtree.
// Otherwise the event is dropped: short-lived directories elsewhere on the
// file system (build trees, package managers) are none of the mount's
// business.
type fanWatcher struct {
	fd      int // the fanotify group, non-blocking, outside Go's netpoller (run says why)
	wake    int // an eventfd that close uses to stop run
	stop    chan struct{}
	root    string // resolved backing dir
	rootFd  int    // for open_by_handle_at
	pid     int32
	emit    func(ev layer.Event, pid int32) // pid: who made the change, 0 if not known
	stopped func()                          // the watch stopped: nothing is reported any more
	log     *slog.Logger
	done    chan struct{}

	// dirs maps a directory's file handle (type and bytes) to its path
	// relative to root; outside holds handles of directories that are
	// not below root.
	dirs    map[string]string
	outside map[string]struct{}
	// lost holds directories inside the tree that were gone before
	// their handle could be taken, until their removal is read.
	lost map[string]struct{}
}

const fanMask = unix.FAN_CREATE | unix.FAN_DELETE | unix.FAN_RENAME | unix.FAN_MODIFY | unix.FAN_ATTRIB | unix.FAN_ONDIR

func startFanotify(root string, emit func(layer.Event, int32), lost func(), log *slog.Logger) (*fanWatcher, error) {
	fd, err := unix.FanotifyInit(unix.FAN_CLASS_NOTIF|unix.FAN_CLOEXEC|unix.FAN_NONBLOCK|unix.FAN_REPORT_DFID_NAME, unix.O_RDONLY|unix.O_CLOEXEC)
	if err != nil {
		return nil, &os.SyscallError{Syscall: "fanotify_init", Err: err}
	}
	if err := unix.FanotifyMark(fd, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, fanMask, unix.AT_FDCWD, root); err != nil {
		unix.Close(fd)
		return nil, &os.SyscallError{Syscall: "fanotify_mark", Err: err}
	}
	rootFd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		unix.Close(rootFd)
		return nil, &os.SyscallError{Syscall: "eventfd", Err: err}
	}
	w := &fanWatcher{
		fd:      fd,
		wake:    wake,
		stop:    make(chan struct{}),
		root:    root,
		rootFd:  rootFd,
		pid:     int32(os.Getpid()),
		emit:    emit,
		stopped: lost,
		log:     log,
		done:    make(chan struct{}),
		dirs:    map[string]string{},
		outside: map[string]struct{}{},
		lost:    map[string]struct{}{},
	}
	// Know every directory before the first event: a directory removed
	// before its events are read can no longer be resolved by handle.
	w.prime()
	go w.run()
	return w, nil
}

func (w *fanWatcher) name() string  { return "fanotify" }
func (w *fanWatcher) precise() bool { return true }

func (w *fanWatcher) close() error {
	close(w.stop)
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(w.wake, one[:]) // wakes run from poll
	<-w.done
	err := unix.Close(w.fd)
	unix.Close(w.wake)
	unix.Close(w.rootFd)
	if err != nil {
		return &os.SyscallError{Syscall: "close", Err: err}
	}
	return nil
}

func handleKey(typ int32, b []byte) string {
	var t [4]byte
	binary.LittleEndian.PutUint32(t[:], uint32(typ))
	return string(t[:]) + string(b)
}

// remember records the handle of the directory at rel and reports whether
// it could.
func (w *fanWatcher) remember(rel string) bool {
	h, _, err := unix.NameToHandleAt(w.rootFd, rel, 0)
	if rel == "" {
		h, _, err = unix.NameToHandleAt(w.rootFd, "", unix.AT_EMPTY_PATH)
	}
	if err == nil {
		w.dirs[handleKey(h.Type(), h.Bytes())] = rel
	}
	return err == nil
}

// learn records a directory that appeared inside the tree at rel (made
// there or moved in); one already gone is lost (see fanWatcher).
func (w *fanWatcher) learn(rel string) {
	if !w.remember(rel) {
		if len(w.lost) < 1<<12 {
			w.lost[rel] = struct{}{}
		} else {
			// Too many to track: what happens in it is unknown now.
			w.emit(layer.Event{Kind: layer.EventRescan, Path: rel, Time: time.Now()}, 0)
		}
	}
}

// gone forgets the directory at rel and below, removed or moved out.
func (w *fanWatcher) gone(rel string) {
	w.renamed(rel, "", true)
	for p := range w.lost {
		if p == rel || strings.HasPrefix(p, rel+"/") {
			delete(w.lost, p)
		}
	}
}

func (w *fanWatcher) prime() {
	w.remember("")
	filepath.WalkDir(w.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || p == w.root {
			return nil
		}
		if rel, ok := relPath(w.root, p); ok {
			w.remember(rel)
		}
		return nil
	})
}

// resolve returns the path (relative to root) of the directory with the
// handle, whether it is inside root, and whether it could be placed. A
// handle that cannot be resolved is outside the tree, unless directories
// inside it were lost (see fanWatcher): then it is not placed.
func (w *fanWatcher) resolve(typ int32, h []byte) (rel string, inside, ok bool) {
	rel, inside, ok = w.lookup(typ, h)
	if !ok && len(w.lost) == 0 {
		return "", false, true
	}
	return rel, inside, ok
}

func (w *fanWatcher) lookup(typ int32, h []byte) (rel string, inside, ok bool) {
	key := handleKey(typ, h)
	if rel, ok := w.dirs[key]; ok {
		return rel, true, true
	}
	if _, ok := w.outside[key]; ok {
		return "", false, true
	}
	fd, err := unix.OpenByHandleAt(w.rootFd, unix.NewFileHandle(typ, h), unix.O_PATH)
	if err != nil {
		return "", false, false
	}
	p, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	unix.Close(fd)
	if err != nil || strings.HasSuffix(p, " (deleted)") {
		return "", false, false
	}
	rel, inside = relPath(w.root, p)
	if len(w.dirs)+len(w.outside) > 1<<20 {
		// Bounded: forget the other file system's directories first.
		clear(w.outside)
	}
	if inside {
		w.dirs[key] = rel
	} else {
		w.outside[key] = struct{}{}
	}
	return rel, inside, true
}

// renamed rewrites the remembered paths of a directory moved from old to
// new (new is "", with gone, when it left the tree).
func (w *fanWatcher) renamed(old, new string, gone bool) {
	if !gone {
		for p := range w.lost {
			if p == old || strings.HasPrefix(p, old+"/") {
				delete(w.lost, p)
				w.lost[new+p[len(old):]] = struct{}{}
			}
		}
	}
	for k, p := range w.dirs {
		if p == old || strings.HasPrefix(p, old+"/") {
			if gone {
				delete(w.dirs, k)
			} else {
				w.dirs[k] = new + p[len(old):]
			}
		}
	}
}

// fanGather is how long run lets a burst of events queue up in the kernel
// after it has read one batch, before it reads again.
const fanGather = 2 * time.Millisecond

// run reads the events. Every change on the backing file system queues an
// event, the daemon's own included (each op through the mount is one or
// more), and a reader waiting for the group is woken for each: read one at
// a time, a busy mount's own events cost a wake-up, a read and a context
// switch per op, which showed in rm -rf and untar. So run waits in poll(2)
// only while the group is quiet; once it has read a batch it sleeps for
// fanGather with nobody waiting on the group, so that the events of a
// burst queue up without waking anyone, and reads them in one go. The
// first event after a quiet spell is read at once; events inside a burst
// are at most fanGather late. The group stays out of Go's netpoller, which
// would wake one of the runtime's threads for each event whether or not
// run is reading.
func (w *fanWatcher) run() {
	defer close(w.done)
	buf := make([]byte, 256<<10)
	fds := []unix.PollFd{{Fd: int32(w.fd), Events: unix.POLLIN}, {Fd: int32(w.wake), Events: unix.POLLIN}}
	wfd := fds[1:]
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds, -1); err != nil && err != unix.EINTR {
			w.fail(err)
			return
		}
		select {
		case <-w.stop:
			return
		default:
		}
		if fds[0].Revents == 0 {
			continue
		}
		for {
			n, err := unix.Read(w.fd, buf)
			if err == unix.EINTR {
				continue
			}
			if err == unix.EAGAIN {
				break
			}
			if err != nil {
				w.fail(err)
				return
			}
			w.batch(buf[:n])
			if n < len(buf)/2 {
				break // the queue is drained, or nearly
			}
		}
		// Sleep in poll(2) on the wake-up fd alone, not on a Go
		// timer: the runtime would park this goroutine and wake one
		// of its threads from its netpoller when the timer fires,
		// a few more syscalls and context switches per batch.
		wfd[0].Revents = 0
		if _, err := unix.Poll(wfd, int(fanGather/time.Millisecond)); err != nil && err != unix.EINTR {
			w.fail(err)
			return
		}
		select {
		case <-w.stop:
			return
		default:
		}
	}
}

// fail reports that the watch is lost: users rescan.
func (w *fanWatcher) fail(err error) {
	w.log.Error("fanotify read failed; backing changes are no longer reported", "error", err)
	w.stopped()
	w.emit(layer.Event{Kind: layer.EventRescan}, 0)
}

// fid is one directory-fid-and-name record of an event.
type fid struct {
	typ    int32
	handle []byte
	name   string
}

func (w *fanWatcher) batch(buf []byte) {
	now := time.Now()
	rescanned := map[string]bool{}
	// rescan reports that everything must be read again.
	rescan := func() {
		if !rescanned[""] {
			w.emit(layer.Event{Kind: layer.EventRescan, Time: now}, 0)
			rescanned[""] = true
		}
	}
	// unplaced reports an event in a directory that cannot be placed:
	// one of the lost directories (resolve), each a rescan.
	unplaced := func() {
		for p := range w.lost {
			if !rescanned[p] && !rescanned[""] {
				w.emit(layer.Event{Kind: layer.EventRescan, Path: p, Time: now}, 0)
				rescanned[p] = true
			}
		}
	}
	const metaLen = int(unsafe.Sizeof(unix.FanotifyEventMetadata{}))
	for len(buf) >= metaLen {
		m := (*unix.FanotifyEventMetadata)(unsafe.Pointer(&buf[0]))
		if int(m.Event_len) < metaLen || int(m.Event_len) > len(buf) || m.Vers != unix.FANOTIFY_METADATA_VERSION {
			w.log.Error("fanotify: malformed event")
			rescan()
			return
		}
		rec := buf[m.Metadata_len:m.Event_len]
		buf = buf[m.Event_len:]
		if m.Fd >= 0 {
			unix.Close(int(m.Fd))
		}
		if m.Mask&unix.FAN_Q_OVERFLOW != 0 {
			w.log.Warn("fanotify queue overflowed; reporting a rescan")
			rescan()
			continue
		}
		if m.Pid == w.pid {
			// The daemon's own change: through the mount, or a
			// filter's own work.
			continue
		}
		var main, old, new *fid
		for len(rec) >= 4 {
			typ, l := rec[0], int(binary.LittleEndian.Uint16(rec[2:4]))
			if l < 4 || l > len(rec) {
				break
			}
			if f := parseFid(rec[4:l]); f != nil {
				switch typ {
				case unix.FAN_EVENT_INFO_TYPE_DFID_NAME, unix.FAN_EVENT_INFO_TYPE_DFID:
					main = f
				case unix.FAN_EVENT_INFO_TYPE_OLD_DFID_NAME:
					old = f
				case unix.FAN_EVENT_INFO_TYPE_NEW_DFID_NAME:
					new = f
				}
			}
			rec = rec[l:]
		}
		dir := m.Mask&unix.FAN_ONDIR != 0
		if m.Mask&unix.FAN_RENAME != 0 && old != nil && new != nil {
			w.rename(old, new, dir, now, unplaced)
		}
		if main == nil {
			continue
		}
		dp, inside, ok := w.resolve(main.typ, main.handle)
		if !ok {
			// Its directory is gone and was never seen: we cannot
			// say what changed, only where to look again.
			unplaced()
			continue
		}
		if !inside {
			continue
		}
		p := dp
		if main.name != "." {
			p = join(dp, main.name)
		}
		if m.Mask&unix.FAN_CREATE != 0 {
			if dir {
				w.learn(p)
			}
			w.emit(layer.Event{Kind: layer.EventCreate, Path: p, Dir: dir, Time: now}, 0)
		}
		if m.Mask&unix.FAN_MODIFY != 0 {
			w.emit(layer.Event{Kind: layer.EventModify, Path: p, Dir: dir, Time: now}, m.Pid)
		}
		if m.Mask&unix.FAN_ATTRIB != 0 {
			w.emit(layer.Event{Kind: layer.EventAttrib, Path: p, Dir: dir, Time: now}, m.Pid)
		}
		if m.Mask&unix.FAN_DELETE != 0 {
			if dir {
				w.gone(p)
			}
			w.emit(layer.Event{Kind: layer.EventRemove, Path: p, Dir: dir, Time: now}, 0)
		}
	}
}

func (w *fanWatcher) rename(old, new *fid, dir bool, now time.Time, rescan func()) {
	od, oin, ook := w.resolve(old.typ, old.handle)
	nd, nin, nok := w.resolve(new.typ, new.handle)
	if !ook || !nok {
		rescan()
		return
	}
	op, np := join(od, old.name), join(nd, new.name)
	switch {
	case oin && nin:
		if dir {
			w.renamed(op, np, false)
		}
		w.emit(layer.Event{Kind: layer.EventRename, Path: np, OldPath: op, Dir: dir, Time: now}, 0)
	case oin:
		if dir {
			w.gone(op)
		}
		w.emit(layer.Event{Kind: layer.EventRemove, Path: op, Dir: dir, Time: now}, 0)
	case nin:
		if dir {
			w.learn(np)
		}
		w.emit(layer.Event{Kind: layer.EventCreate, Path: np, Dir: dir, Time: now}, 0)
	}
}

// parseFid parses the body of a fanotify_event_info_fid: fsid (8 bytes),
// struct file_handle (handle_bytes, handle_type, f_handle), and for the
// *_DFID_NAME kinds a NUL-terminated name.
func parseFid(b []byte) *fid {
	if len(b) < 16 {
		return nil
	}
	hb := int(binary.LittleEndian.Uint32(b[8:12]))
	typ := int32(binary.LittleEndian.Uint32(b[12:16]))
	if 16+hb > len(b) {
		return nil
	}
	f := &fid{typ: typ, handle: b[16 : 16+hb]}
	rest := b[16+hb:]
	if i := indexByte(rest, 0); i >= 0 {
		rest = rest[:i]
	}
	f.name = string(rest)
	return f
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
