package notify

import (
	"errors"
	"log/slog"
	"os"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/vfsfilter/vfsfilter/layer"
)

// inoWatcher watches the backing directory with inotify, one watch per
// directory, for kernels or file systems without fanotify's filesystem
// marks. inotify does not say who made a change, so the daemon's own
// changes are reported too; the Source drops those it expects
// (Source.ours). A directory created underneath is watched as soon as
// its creation is read, and scanned, since entries may have been made in
// it before the watch existed; those are reported as creations.
type inoWatcher struct {
	f    *os.File
	fd   int
	root string
	emit func(layer.Event)
	lost func() // the watch stopped: nothing is reported any more
	log  *slog.Logger
	done chan struct{}

	wds map[int32]string // watch descriptor -> directory, relative to root
	// moves holds the first half of a rename (IN_MOVED_FROM) until its
	// second half (IN_MOVED_TO with the same cookie) arrives; unpaired,
	// it was a move out of the tree: a removal.
	moves map[uint32]pendingMove
}

type pendingMove struct {
	path string
	dir  bool
	at   time.Time
}

const inoMask = unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO |
	unix.IN_MODIFY | unix.IN_ATTRIB | unix.IN_DONT_FOLLOW | unix.IN_ONLYDIR | unix.IN_EXCL_UNLINK

// movePairWait is how long the first half of a rename waits for its second.
const movePairWait = 10 * time.Millisecond

func startInotify(root string, emit func(layer.Event), lost func(), log *slog.Logger) (*inoWatcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		return nil, &os.SyscallError{Syscall: "inotify_init1", Err: err}
	}
	w := &inoWatcher{
		f:     os.NewFile(uintptr(fd), "inotify"),
		fd:    fd,
		root:  root,
		emit:  emit,
		lost:  lost,
		log:   log,
		done:  make(chan struct{}),
		wds:   map[int32]string{},
		moves: map[uint32]pendingMove{},
	}
	if err := w.watchTree("", false); err != nil {
		w.f.Close()
		return nil, err
	}
	go w.run()
	return w, nil
}

func (w *inoWatcher) name() string  { return "inotify" }
func (w *inoWatcher) precise() bool { return false }

func (w *inoWatcher) close() error {
	err := w.f.Close()
	<-w.done
	return err
}

// watchTree adds watches on rel and every directory below it. With report,
// every entry found is reported as created (it appeared before its
// directory was watched).
func (w *inoWatcher) watchTree(rel string, report bool) error {
	wd, err := unix.InotifyAddWatch(w.fd, join(w.root, rel), inoMask)
	if rel == "" {
		wd, err = unix.InotifyAddWatch(w.fd, w.root, inoMask)
	}
	if err != nil {
		if rel == "" {
			return &os.SyscallError{Syscall: "inotify_add_watch", Err: err}
		}
		if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
			// Out of watches (fs.inotify.max_user_watches): what
			// happens below rel is unknown from now on.
			w.log.Warn("inotify: cannot watch a directory; changes in it are not reported", "path", rel, "error", err)
			w.emit(layer.Event{Kind: layer.EventRescan, Path: rel})
		}
		return nil
	}
	w.wds[int32(wd)] = rel
	ents, err := os.ReadDir(join(w.root, rel))
	if err != nil {
		return nil
	}
	for _, e := range ents {
		p := join(rel, e.Name())
		if report {
			w.emit(layer.Event{Kind: layer.EventCreate, Path: p, Dir: e.IsDir()})
		}
		if e.IsDir() {
			w.watchTree(p, report)
		}
	}
	return nil
}

// moved rewrites the watched paths below a directory moved from old to new
// (or forgets them, with gone).
func (w *inoWatcher) moved(old, new string, gone bool) {
	for wd, p := range w.wds {
		if p == old || strings.HasPrefix(p, old+"/") {
			if gone {
				unix.InotifyRmWatch(w.fd, uint32(wd))
				delete(w.wds, wd)
			} else {
				w.wds[wd] = new + p[len(old):]
			}
		}
	}
}

func (w *inoWatcher) run() {
	defer close(w.done)
	buf := make([]byte, 256<<10)
	for {
		if len(w.moves) > 0 {
			w.f.SetReadDeadline(time.Now().Add(movePairWait))
		} else {
			w.f.SetReadDeadline(time.Time{})
		}
		n, err := w.f.Read(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				w.flushMoves(time.Now())
				continue
			}
			if errors.Is(err, os.ErrClosed) {
				return
			}
			w.log.Error("inotify read failed; backing changes are no longer reported", "error", err)
			w.lost()
			w.emit(layer.Event{Kind: layer.EventRescan})
			return
		}
		w.batch(buf[:n])
	}
}

// flushMoves reports the first halves of renames that waited long enough
// as removals: the entry left the tree.
func (w *inoWatcher) flushMoves(now time.Time) {
	for c, m := range w.moves {
		if now.Sub(m.at) >= movePairWait {
			delete(w.moves, c)
			if m.dir {
				w.moved(m.path, "", true)
			}
			w.emit(layer.Event{Kind: layer.EventRemove, Path: m.path, Dir: m.dir, Time: m.at})
		}
	}
}

func (w *inoWatcher) batch(buf []byte) {
	now := time.Now()
	const hdr = unix.SizeofInotifyEvent
	for len(buf) >= hdr {
		e := (*unix.InotifyEvent)(unsafe.Pointer(&buf[0]))
		end := hdr + int(e.Len)
		if end > len(buf) {
			break
		}
		name := string(buf[hdr:end])
		if i := strings.IndexByte(name, 0); i >= 0 {
			name = name[:i]
		}
		buf = buf[end:]
		if e.Mask&unix.IN_Q_OVERFLOW != 0 {
			w.log.Warn("inotify queue overflowed; reporting a rescan")
			w.emit(layer.Event{Kind: layer.EventRescan, Time: now})
			continue
		}
		dirPath, ok := w.wds[e.Wd]
		if !ok {
			continue
		}
		if e.Mask&unix.IN_IGNORED != 0 {
			delete(w.wds, e.Wd)
			continue
		}
		if name == "" && dirPath != "" {
			// An event on a watched directory itself: the watch on
			// its parent reports it too, with its name.
			continue
		}
		dir := e.Mask&unix.IN_ISDIR != 0
		p := join(dirPath, name)
		switch {
		case e.Mask&unix.IN_CREATE != 0:
			w.emit(layer.Event{Kind: layer.EventCreate, Path: p, Dir: dir, Time: now})
			if dir {
				w.watchTree(p, true)
			}
		case e.Mask&unix.IN_DELETE != 0:
			w.emit(layer.Event{Kind: layer.EventRemove, Path: p, Dir: dir, Time: now})
		case e.Mask&unix.IN_MOVED_FROM != 0:
			w.moves[e.Cookie] = pendingMove{path: p, dir: dir, at: now}
		case e.Mask&unix.IN_MOVED_TO != 0:
			if m, ok := w.moves[e.Cookie]; ok {
				delete(w.moves, e.Cookie)
				if dir {
					w.moved(m.path, p, false)
				}
				w.emit(layer.Event{Kind: layer.EventRename, Path: p, OldPath: m.path, Dir: dir, Time: now})
			} else {
				w.emit(layer.Event{Kind: layer.EventCreate, Path: p, Dir: dir, Time: now})
				if dir {
					w.watchTree(p, false)
				}
			}
		case e.Mask&unix.IN_MODIFY != 0:
			w.emit(layer.Event{Kind: layer.EventModify, Path: p, Dir: dir, Time: now})
		case e.Mask&unix.IN_ATTRIB != 0:
			w.emit(layer.Event{Kind: layer.EventAttrib, Path: p, Dir: dir || name == "", Time: now})
		}
	}
	w.flushMoves(now)
}
