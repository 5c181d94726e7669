package notify

import (
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/vfsfilter/vfsfilter/layer"
)

// Options configures a Notifier.
type Options struct {
	// Backing is the backing directory to watch for changes made by other
	// programs. Empty: report only changes made through the mount.
	Backing string
	// Watcher forces the backing watch's mechanism: "fanotify",
	// "inotify", or "" to try fanotify and fall back to inotify.
	Watcher string
	// NoReplay turns off re-enacting changes found underneath on the
	// mount (the inotify replay, see doc.go).
	NoReplay bool
	// Log receives the notifier's log lines; nil means slog.Default().
	Log *slog.Logger
}

// Notifier is the notify machinery of one mount: the filter on top of the
// stack (Filter), the event source at its bottom (Source), the fan-out to
// watchers, the cache invalidator and the replay thread.
type Notifier struct {
	opts Options
	log  *slog.Logger
	top  *Filter
	src  *Source
	hub  *hub

	// pipe carries backing events (visible names) to the invalidator
	// and the replay thread, once the mount serves.
	pipe *pipeline

	// beforeReplay, set by tests before Serve, runs on the replay
	// thread before each event is re-enacted (export_test.go).
	beforeReplay func(layer.Event)

	mu     sync.Mutex
	closed bool
	// blinded: the backing watch stopped; onBlind runs once, then or
	// when registered after it.
	blinded bool
	onBlind []func()
}

// New returns a Notifier. Its two filters are n.Filter() (altitude
// layer.AltitudeNotify) and n.Source() (AltitudeSource); both belong in the
// stack. Call Serve once the mount serves and Close after it is gone
// (closing the Filter, as Stack.Close does, closes the Notifier).
func New(opts Options) (*Notifier, error) {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	n := &Notifier{
		opts: opts,
		log:  opts.Log.With("filter", "notify"),
		hub:  newHub(),
	}
	n.top = &Filter{n: n}
	n.src = &Source{n: n}
	return n, nil
}

// Filter returns the top filter: it reports changes made through the mount
// and receives the backing watch's events in visible names.
func (n *Notifier) Filter() *Filter { return n.top }

// Source returns the bottom filter, which owns the backing watch and
// publishes what it finds in backing names.
func (n *Notifier) Source() *Source { return n.src }

// Watcher returns the mechanism of the backing watch ("fanotify",
// "inotify") or "" when there is none.
func (n *Notifier) Watcher() string { return n.src.watcherName() }

// Subscribe returns a subscription to every event from now on, in
// visible names. Events wait in a bounded queue: a subscriber that reads
// too slowly loses events and gets a rescan of the root in their place; it
// never slows the file system down. Close it when done.
func (n *Notifier) Subscribe() *Subscription {
	return n.hub.subscribe(1 << 14)
}

// OnBlind registers fn to run once when changes made underneath stop
// invalidating the kernel's caches for good (the backing watch's read
// failed, or Serve could not start the invalidator), or at once if they
// already have; a failed watch reports a rescan of everything, but nothing
// after it. A mount
// whose kernel caches are kept long because the watch invalidates them
// registers a fallback to short timeouts here (layer.Server.LimitCaching).
// fn must not block.
func (n *Notifier) OnBlind(fn func()) {
	n.mu.Lock()
	blind := n.blinded
	if !blind {
		n.onBlind = append(n.onBlind, fn)
	}
	n.mu.Unlock()
	if blind {
		fn()
	}
}

// blind is called by the backing watch when it stops.
func (n *Notifier) blind() {
	n.mu.Lock()
	fns := n.onBlind
	n.onBlind, n.blinded = nil, true
	n.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// Serve starts what needs the live mount: cache invalidation for changes
// found underneath and, unless disabled or the mount is read-only, their
// replay for inotify watchers of the mount.
func (n *Notifier) Serve(srv *layer.Server) error {
	n.src.openUp()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed || n.pipe != nil {
		return nil
	}
	p, err := startPipeline(srv, n.log, !n.opts.NoReplay && !srv.ReadOnly(), func(ev layer.Event) {
		n.hub.publish(ev, "backing")
	}, n.beforeReplay)
	if err != nil {
		// Nothing will invalidate the kernel's caches.
		go n.blind()
		return err
	}
	n.pipe = p
	return nil
}

// Close stops the backing watch, the invalidator and the replay thread.
func (n *Notifier) Close() error {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return nil
	}
	n.closed = true
	p := n.pipe
	n.mu.Unlock()
	err := n.src.stop()
	if p != nil {
		p.close()
	}
	return err
}

// Stats are counters for tests and benchmarks.
type Stats struct {
	Backing, Invalidated, Replayed, ReplayDropped, ReplayFailed uint64
}

// Stats returns the counters so far.
func (n *Notifier) Stats() Stats {
	n.mu.Lock()
	p := n.pipe
	n.mu.Unlock()
	st := Stats{Backing: n.src.count.Load()}
	if p != nil {
		st.Invalidated = p.invalidated.Load()
		st.Replayed = p.replayed.Load()
		st.ReplayDropped = p.dropped.Load()
		st.ReplayFailed = p.failed.Load()
	}
	return st
}

// Filter is the notify filter, at the top of the stack: it sees every op in
// the names users see. Its post-callbacks turn successful changes into
// events; as an EventFilter it is the last stop of the backing watch's
// events before the subscribers.
type Filter struct {
	n   *Notifier
	att *layer.Attachment
	// visible holds, from pre- to post-callback, the visible paths of
	// ops in flight: filters below rewrite op paths in place (namespace
	// turns README.md into README.txt), and events must carry what users
	// see.
	visible sync.Map // layer.Op -> visiblePaths
}

type visiblePaths struct{ path, old string }

// remember is the pre-callback of every op that can produce an event: it
// keeps the op's visible paths for the post-callback. (Telling the backing
// watch's reports of these changes apart is the Source's business: it sees
// the same ops, in backing names.)
func remember[O layer.Op](f *Filter, paths func(O) (string, string)) layer.PreFunc[O] {
	return func(c *layer.Call, op O) (layer.Status, layer.Errno) {
		if c.Internal {
			return layer.ContinueNoPost, 0
		}
		p, old := paths(op)
		if layer.Unreachable(p) || layer.Unreachable(old) {
			// A change through an open file whose name is gone:
			// no name users see changed.
			return layer.ContinueNoPost, 0
		}
		f.visible.Store(layer.Op(op), visiblePaths{p, old})
		return layer.Continue, 0
	}
}

// paths returns the visible paths remembered for op, or ok false when
// the pre-callback skipped it (an internal call).
func (f *Filter) paths(op layer.Op) (visiblePaths, bool) {
	v, ok := f.visible.LoadAndDelete(op)
	if !ok {
		return visiblePaths{}, false
	}
	return v.(visiblePaths), true
}

// Name implements layer.Filter.
func (f *Filter) Name() string { return "notify" }

// Altitude implements layer.Filter.
func (f *Filter) Altitude() int { return layer.AltitudeNotify }

// Close implements io.Closer: Stack.Close stops the notifier.
func (f *Filter) Close() error { return f.n.Close() }

// Attach implements layer.Filter.
func (f *Filter) Attach(a *layer.Attachment) error {
	f.att = a
	a.Log = f.n.log
	// The top attaches last: from now on the backing watch's events may
	// travel up through every filter.
	defer f.n.src.openUp()
	layer.OnPre(a, remember(f, func(op *layer.CreateOp) (string, string) { return op.Path, "" }))
	layer.OnPre(a, remember(f, func(op *layer.MknodOp) (string, string) { return op.Path, "" }))
	layer.OnPre(a, remember(f, func(op *layer.MkdirOp) (string, string) { return op.Path, "" }))
	layer.OnPre(a, remember(f, func(op *layer.SymlinkOp) (string, string) { return op.Path, "" }))
	layer.OnPre(a, remember(f, func(op *layer.LinkOp) (string, string) { return op.NewPath, "" }))
	layer.OnPre(a, remember(f, func(op *layer.UnlinkOp) (string, string) { return op.Path, "" }))
	layer.OnPre(a, remember(f, func(op *layer.RmdirOp) (string, string) { return op.Path, "" }))
	layer.OnPre(a, remember(f, func(op *layer.RenameOp) (string, string) { return op.NewPath, op.OldPath }))
	layer.OnPre(a, remember(f, func(op *layer.SetattrOp) (string, string) { return op.Path, "" }))
	layer.OnPre(a, remember(f, func(op *layer.SetxattrOp) (string, string) { return op.Path, "" }))
	layer.OnPre(a, remember(f, func(op *layer.RemovexattrOp) (string, string) { return op.Path, "" }))
	layer.OnPre(a, remember(f, func(op *layer.OpenOp) (string, string) { return op.Path, "" }))
	layer.OnPost(a, f.postCreate)
	layer.OnPost(a, f.postMknod)
	layer.OnPost(a, f.postMkdir)
	layer.OnPost(a, f.postSymlink)
	layer.OnPost(a, f.postLink)
	layer.OnPost(a, f.postUnlink)
	layer.OnPost(a, f.postRmdir)
	layer.OnPost(a, f.postRename)
	layer.OnPost(a, f.postSetattr)
	layer.OnPost(a, f.postSetxattr)
	layer.OnPost(a, f.postRemovexattr)
	layer.OnPost(a, f.postOpen)
	layer.OnPost(a, f.postWrite)
	layer.OnPost(a, f.postAllocate)
	layer.OnPost(a, f.postCopyFileRange)
	layer.OnPost(a, f.postFlush)
	return nil
}

// emit reports a change made through the mount. It runs inside the
// request: it only appends to bounded queues (see hub).
func (f *Filter) emit(c *layer.Call, ev layer.Event) {
	ev.Time = time.Now()
	f.n.hub.publish(ev, "mount")
	// Other subscribers of the stack get it too. notify is the top
	// filter: nothing translates it on the way.
	f.att.Publish(ev)
}

func mine(c *layer.Call, errno layer.Errno) bool { return errno == 0 && !c.Internal }

func (f *Filter) postCreate(c *layer.Call, op *layer.CreateOp, errno layer.Errno) layer.Errno {
	if v, ok := f.paths(op); ok && errno == 0 {
		f.emit(c, layer.Event{Kind: layer.EventCreate, Path: v.path})
		f.opened(v.path, op.Flags, op.Handle)
	}
	return errno
}

func (f *Filter) postMknod(c *layer.Call, op *layer.MknodOp, errno layer.Errno) layer.Errno {
	if v, ok := f.paths(op); ok && errno == 0 {
		f.emit(c, layer.Event{Kind: layer.EventCreate, Path: v.path})
	}
	return errno
}

func (f *Filter) postMkdir(c *layer.Call, op *layer.MkdirOp, errno layer.Errno) layer.Errno {
	if v, ok := f.paths(op); ok && errno == 0 {
		f.emit(c, layer.Event{Kind: layer.EventCreate, Path: v.path, Dir: true})
	}
	return errno
}

func (f *Filter) postSymlink(c *layer.Call, op *layer.SymlinkOp, errno layer.Errno) layer.Errno {
	if v, ok := f.paths(op); ok && errno == 0 {
		f.emit(c, layer.Event{Kind: layer.EventCreate, Path: v.path})
	}
	return errno
}

// postLink reports hard links, and files made with O_TMPFILE when they are
// linked into place (the TMPFILE itself has no name and no event).
func (f *Filter) postLink(c *layer.Call, op *layer.LinkOp, errno layer.Errno) layer.Errno {
	if v, ok := f.paths(op); ok && errno == 0 {
		f.emit(c, layer.Event{Kind: layer.EventCreate, Path: v.path})
	}
	return errno
}

func (f *Filter) postUnlink(c *layer.Call, op *layer.UnlinkOp, errno layer.Errno) layer.Errno {
	if v, ok := f.paths(op); ok && errno == 0 {
		f.emit(c, layer.Event{Kind: layer.EventRemove, Path: v.path})
	}
	return errno
}

func (f *Filter) postRmdir(c *layer.Call, op *layer.RmdirOp, errno layer.Errno) layer.Errno {
	if v, ok := f.paths(op); ok && errno == 0 {
		f.emit(c, layer.Event{Kind: layer.EventRemove, Path: v.path, Dir: true})
	}
	return errno
}

// postRename reports a rename as one event with both names. An exchange
// (RENAME_EXCHANGE) is two renames, as each name now holds the other entry.
func (f *Filter) postRename(c *layer.Call, op *layer.RenameOp, errno layer.Errno) layer.Errno {
	v, ok := f.paths(op)
	if !ok || errno != 0 {
		return errno
	}
	// op's paths are the backing names by now: ask below with those.
	dir := f.isDir(c, op.NewPath)
	f.emit(c, layer.Event{Kind: layer.EventRename, Path: v.path, OldPath: v.old, Dir: dir})
	if op.Flags&unix.RENAME_EXCHANGE != 0 {
		f.emit(c, layer.Event{Kind: layer.EventRename, Path: v.old, OldPath: v.path, Dir: f.isDir(c, op.OldPath)})
	}
	return errno
}

// isDir asks the layers below (as an internal call) whether path is a
// directory. Only renames and xattr changes need it: their ops do not say.
func (f *Filter) isDir(c *layer.Call, path string) bool {
	op := &layer.GetattrOp{Path: path}
	if f.att.Below.Do(layer.InternalCall(c.Context), op) != 0 {
		return false
	}
	return op.Out.Mode&syscall.S_IFMT == syscall.S_IFDIR
}

const attribBits = fuse.FATTR_MODE | fuse.FATTR_UID | fuse.FATTR_GID | fuse.FATTR_MTIME | fuse.FATTR_ATIME |
	fuse.FATTR_MTIME_NOW | fuse.FATTR_ATIME_NOW | fuse.FATTR_CTIME

// postSetattr reports truncation as modify (as inotify does: IN_MODIFY)
// and the other attribute changes as attrib.
func (f *Filter) postSetattr(c *layer.Call, op *layer.SetattrOp, errno layer.Errno) layer.Errno {
	v, ok := f.paths(op)
	if !ok || errno != 0 {
		return errno
	}
	dir := op.Out.Mode&syscall.S_IFMT == syscall.S_IFDIR
	if op.In.Valid&fuse.FATTR_SIZE != 0 {
		f.emit(c, layer.Event{Kind: layer.EventModify, Path: v.path, Dir: dir})
	}
	if op.In.Valid&attribBits != 0 {
		f.emit(c, layer.Event{Kind: layer.EventAttrib, Path: v.path, Dir: dir})
	}
	return errno
}

func (f *Filter) postSetxattr(c *layer.Call, op *layer.SetxattrOp, errno layer.Errno) layer.Errno {
	if v, ok := f.paths(op); ok && errno == 0 {
		f.emit(c, layer.Event{Kind: layer.EventAttrib, Path: v.path, Dir: f.isDir(c, op.Path)})
	}
	return errno
}

func (f *Filter) postRemovexattr(c *layer.Call, op *layer.RemovexattrOp, errno layer.Errno) layer.Errno {
	if v, ok := f.paths(op); ok && errno == 0 {
		f.emit(c, layer.Event{Kind: layer.EventAttrib, Path: v.path, Dir: f.isDir(c, op.Path)})
	}
	return errno
}

// Writes. Data changes are reported once per open file description and
// "burst": the first change after an open (or after the previous report)
// is reported when the file is closed (FLUSH, every close(2)), or at the
// latest modifyEvery after the previous report while writes go on. This
// is what a watcher needs (the file changed; read it when it is closed)
// without an event per write(2) — a 1 GiB copy is 1024 writes. Writes made
// by the kernel directly to the backing file (FUSE passthrough) never
// reach the daemon: for those the file's size and times, taken at open and
// at each close, tell whether it changed.

// modifyEvery bounds how long a file written without pause goes
// unreported.
const modifyEvery = time.Second

// writeState is the notify filter's context on an open file.
type writeState struct {
	mu       sync.Mutex
	path     string
	dirty    bool      // written through the daemon since the last report
	stamp    stamp     // backing file's size and times at the last report
	reported time.Time // last report
}

type stamp struct {
	size       int64
	mtime, ctm unix.Timespec
}

func fstamp(fd int) (stamp, bool) {
	var st unix.Stat_t
	if fd < 0 || unix.Fstat(fd, &st) != nil {
		return stamp{}, false
	}
	return stamp{st.Size, st.Mtim, st.Ctim}, true
}

func writable(flags uint32) bool { return flags&syscall.O_ACCMODE != syscall.O_RDONLY }

func (f *Filter) opened(path string, flags uint32, h *layer.Handle) {
	if h == nil || !writable(flags) {
		return
	}
	ws := &writeState{path: path, reported: time.Now()}
	ws.stamp, _ = fstamp(h.Fd)
	f.att.SetHandleContext(h, ws)
}

func (f *Filter) postOpen(c *layer.Call, op *layer.OpenOp, errno layer.Errno) layer.Errno {
	if v, ok := f.paths(op); ok && errno == 0 {
		f.opened(v.path, op.Flags, op.Handle)
		if op.Flags&syscall.O_TRUNC != 0 && writable(op.Flags) {
			// open(O_TRUNC) is a truncation: IN_MODIFY on ext4.
			f.emit(c, layer.Event{Kind: layer.EventModify, Path: v.path})
		}
	}
	return errno
}

func (f *Filter) written(c *layer.Call, h *layer.Handle) {
	ws, _ := f.att.HandleContext(h).(*writeState)
	if ws == nil {
		return
	}
	ws.mu.Lock()
	ws.dirty = true
	due := time.Since(ws.reported) >= modifyEvery
	ws.mu.Unlock()
	if due {
		f.report(c, h, ws)
	}
}

// report emits one modify if the file changed since the last report.
func (f *Filter) report(c *layer.Call, h *layer.Handle, ws *writeState) {
	now, ok := fstamp(h.Fd)
	ws.mu.Lock()
	changed := ws.dirty || (ok && now != ws.stamp)
	ws.dirty = false
	if ok {
		ws.stamp = now
	}
	ws.reported = time.Now()
	path := ws.path
	ws.mu.Unlock()
	if changed {
		f.emit(c, layer.Event{Kind: layer.EventModify, Path: path})
	}
}

func (f *Filter) postWrite(c *layer.Call, op *layer.WriteOp, errno layer.Errno) layer.Errno {
	if mine(c, errno) && op.Written > 0 {
		f.written(c, op.Handle)
	}
	return errno
}

func (f *Filter) postAllocate(c *layer.Call, op *layer.AllocateOp, errno layer.Errno) layer.Errno {
	if mine(c, errno) {
		f.written(c, op.Handle)
	}
	return errno
}

func (f *Filter) postCopyFileRange(c *layer.Call, op *layer.CopyFileRangeOp, errno layer.Errno) layer.Errno {
	if mine(c, errno) && op.Copied > 0 {
		f.written(c, op.Out)
	}
	return errno
}

func (f *Filter) postFlush(c *layer.Call, op *layer.FlushOp, errno layer.Errno) layer.Errno {
	if ws, _ := f.att.HandleContext(op.Handle).(*writeState); ws != nil && !c.Internal {
		f.report(c, op.Handle, ws)
	}
	return errno
}

// FilterEvent implements layer.EventFilter. Every event of the backing
// watch ends here, in visible names, after every filter below translated
// it or dropped it (and the Source dropped the daemon's own changes). The
// notify filter hands it to the invalidator, which passes it on to the
// subscribers once the kernel forgot what it cached about it (and then to
// the replay thread).
func (f *Filter) FilterEvent(ev *layer.Event) bool {
	n := f.n
	n.mu.Lock()
	p := n.pipe
	n.mu.Unlock()
	if p != nil {
		// Published once the kernel's caches are invalidated.
		p.push(*ev)
	} else {
		n.hub.publish(*ev, "backing")
	}
	return true
}
