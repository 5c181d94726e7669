package notify

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vfsfilter/vfsfilter/layer"
)

// pipeline takes the backing watch's events, in visible names, to the
// kernel: first the invalidator drops what the kernel caches about them,
// then hands them to the watchers (so that a watcher that reacts to an
// event by looking through the mount sees the change), then the replay
// thread re-enacts them on the mount so that the kernel emits inotify
// events. Both run on goroutines of their own and are fed
// through bounded queues that the backing watch never blocks on; see
// doc.go for why this cannot deadlock.
type pipeline struct {
	srv     *layer.Server
	log     *slog.Logger
	publish func(layer.Event) // to the watchers, after the invalidation
	// before, when set (by tests), runs on the replay thread before each
	// event is re-enacted.
	before func(layer.Event)

	inv    chan layer.Event // to the invalidator
	rep    chan layer.Event // to the replay thread; nil without replay
	lost   atomic.Bool      // the invalidator's queue overflowed
	wg     sync.WaitGroup
	closed sync.Once

	invalidated, replayed, dropped, failed atomic.Uint64
}

// Queue sizes. The invalidator costs one or two writes to /dev/fuse per
// event (microseconds); the replay costs a few FUSE round trips (about
// 0.2 ms), so under a flood it falls behind first and drops.
const (
	invQueue    = 1 << 16
	replayQueue = 1 << 12
)

func startPipeline(srv *layer.Server, log *slog.Logger, replay bool, publish, before func(layer.Event)) (*pipeline, error) {
	p := &pipeline{srv: srv, log: log, publish: publish, before: before, inv: make(chan layer.Event, invQueue)}
	if replay {
		p.rep = make(chan layer.Event, replayQueue)
		ready := make(chan struct{})
		p.wg.Add(1)
		go p.replayLoop(ready)
		<-ready
	}
	p.wg.Add(1)
	go p.invalidateLoop()
	return p, nil
}

// push queues an event without ever blocking: the backing watch must keep
// reading. When the invalidator is that far behind, the events it misses
// are replaced by invalidating everything the kernel caches, and the
// watchers get a rescan of the whole mount in their place.
func (p *pipeline) push(ev layer.Event) {
	select {
	case p.inv <- ev:
	default:
		if !p.lost.Swap(true) {
			p.publish(layer.Event{Kind: layer.EventRescan})
		}
	}
}

func (p *pipeline) close() {
	p.closed.Do(func() { close(p.inv) })
	p.wg.Wait()
}

func (p *pipeline) invalidateLoop() {
	defer p.wg.Done()
	if p.rep != nil {
		defer close(p.rep)
	}
	for ev := range p.inv {
		if p.lost.Swap(false) {
			p.log.Warn("cache invalidation fell behind; invalidating every cached entry")
			p.srv.Invalidate(layer.Event{Kind: layer.EventRescan})
		}
		p.srv.Invalidate(ev)
		p.invalidated.Add(1)
		p.publish(ev)
		if p.rep == nil || ev.Kind == layer.EventRescan {
			continue
		}
		// Replay only what was invalidated: the kernel must look the
		// names up again for the replayed syscall to reach us.
		select {
		case p.rep <- ev:
		default:
			if n := p.dropped.Add(1); n&(n-1) == 0 {
				// Log at 1, 2, 4, 8, ... drops.
				p.log.Warn("inotify replay fell behind; inotify watchers of the mount miss changes made underneath (the watch stream has them all)", "dropped", n)
			}
		}
	}
}

// replayLoop is the replay thread. It is locked to its OS thread for its
// whole life and never unlocks it, so the thread id that the bridge
// recognises is never used by another goroutine, and the thread exits with
// the goroutine.
func (p *pipeline) replayLoop(ready chan<- struct{}) {
	defer p.wg.Done()
	runtime.LockOSThread()
	p.srv.SetReplayThread(unix.Gettid())
	close(ready)
	defer p.srv.SetReplayThread(0)
	for ev := range p.rep {
		if p.before != nil {
			p.before(ev)
		}
		if err := p.replay(ev); err != nil {
			p.failed.Add(1)
			p.log.Debug("inotify replay failed", "event", ev.Kind.String(), "path", ev.Path, "error", err)
			// Whatever the kernel made of it, make it ask again.
			p.srv.Invalidate(ev)
			if ev.OldPath != "" {
				p.srv.Invalidate(layer.Event{Kind: layer.EventRemove, Path: ev.OldPath})
			}
			continue
		}
		p.replayed.Add(1)
	}
}

// replay re-enacts one change on the mount. The syscalls below are answered
// by the bridge without touching the backing dir (layer/replay_notify.go).
func (p *pipeline) replay(ev layer.Event) error {
	ctx := context.Background()
	mnt := p.srv.Mountpoint()
	full := mnt + "/" + ev.Path
	op := &layer.ReplayOp{Kind: ev.Kind, Path: ev.Path, OldPath: ev.OldPath, Mode: syscall.S_IFREG}
	if ev.Dir {
		op.Mode = syscall.S_IFDIR
	}
	var a layer.Attr
	if ev.Kind != layer.EventRemove {
		var errno layer.Errno
		if a, errno = p.srv.Lookup(ctx, ev.Path); errno != 0 {
			// Gone again already; its removal follows in the queue.
			return nil
		}
		op.Mode = a.Mode & syscall.S_IFMT
	}
	if ev.Kind == layer.EventCreate || ev.Kind == layer.EventRename {
		// A lookup since the invalidation may have cached the new
		// name again; the kernel would then refuse the creation
		// (EEXIST) or see a rename onto itself (no event).
		p.srv.Invalidate(layer.Event{Kind: layer.EventCreate, Path: ev.Path})
	}
	p.srv.BeginReplay(op)
	defer p.srv.EndReplay()
	switch ev.Kind {
	case layer.EventCreate:
		switch op.Mode {
		case syscall.S_IFDIR:
			return unix.Mkdir(full, a.Mode&07777)
		case syscall.S_IFLNK:
			return unix.Symlink("replay", full)
		default:
			return unix.Mknod(full, op.Mode|a.Mode&07777, int(a.Rdev))
		}
	case layer.EventRemove:
		if ev.Dir {
			return unix.Rmdir(full)
		}
		return unix.Unlink(full)
	case layer.EventRename:
		return unix.Renameat(unix.AT_FDCWD, mnt+"/"+ev.OldPath, unix.AT_FDCWD, full)
	case layer.EventAttrib:
		return unix.Fchownat(unix.AT_FDCWD, full, int(a.Uid), int(a.Gid), unix.AT_SYMLINK_NOFOLLOW)
	case layer.EventModify:
		if op.Mode != syscall.S_IFREG {
			return nil
		}
		return unix.Truncate(full, int64(a.Size))
	}
	return nil
}
