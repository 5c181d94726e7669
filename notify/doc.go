// Package notify reports changes to a mount's tree, in the names users see,
// whoever made them: through the mount, or directly in the backing
// directory. It is the directory-change notification of the Windows filter
// model: every filter translates or drops events on their way up, none of
// the stack's own work is ever reported, and nothing is lost silently.
//
// # Parts
//
//   - [Filter], at the top of the stack (layer.AltitudeNotify). Its
//     post-callbacks turn successful changes made through the mount into
//     events. It sees visible names, but the filters below rewrite op paths
//     in place, so its pre-callbacks keep the visible paths for the
//     post-callbacks. Requests marked Call.Internal (filters' own I/O, the
//     replay thread) are never reported.
//   - [Source], just above the passthrough ([AltitudeSource]). It owns the
//     watch on the backing directory; what the watch finds it publishes in
//     backing names with Attachment.Publish, so the event travels up
//     through every filter (crypt decrypts names, namespace hides and
//     renames) and reaches the Filter's FilterEvent in visible names.
//     Every op that reaches the backing directory passes through it, the
//     user's and the filters' own alike, so it is the Source, where
//     backing paths are known, that drops the watch's reports of the
//     daemon's own changes before publishing them (below).
//   - the backing watch: fanotify with a filesystem mark, or, without
//     fanotify, inotify with one watch per directory.
//   - the invalidator: for each backing event it drops what the kernel
//     caches about the names involved (layer.Server.Invalidate), so a stat
//     through the mount sees a change underneath at once even with long
//     entry and attribute timeouts and cached listings (FOPEN_CACHE_DIR).
//     A file's attributes and pages are dropped under every name the
//     kernel knows it by: a write through a hard link the kernel never
//     looked up reaches the inode it knows by inode number.
//   - the replay thread: re-enacts each backing event on the mount so that
//     plain inotify watchers of the mountpoint see it (below).
//   - subscribers ([Notifier.Subscribe]; the control method "watch",
//     `vfsfilter watch`).
//
// # Events
//
// Kinds are create, remove, modify, attrib, rename (one event with both
// names) and rescan. Writes through the mount are reported per open file:
// one modify when the file is closed (FLUSH), and at most one per second
// while it is written; writes the kernel makes directly to the backing
// file (FUSE passthrough) never reach the daemon and are found at close by
// comparing the backing file's size and times with those at open. While a
// file is open for writing through the mount, the backing watch's modify
// and attrib reports of those writes are dropped for that reason: the
// close reports them (see below for how they are told apart).
//
// # The daemon's own changes
//
// The watch reports every change to the backing directory, the daemon's
// own too: those made through the mount (already reported by the Filter)
// and the filters' work (an HSM migration or recall, crypt's headers),
// which users never see. The Source drops them:
//
//   - fanotify tells who made a change: events whose pid is the daemon's
//     are dropped, exactly. Writes the kernel makes on the daemon's behalf
//     to the backing file of a handle in FUSE passthrough mode come under
//     the writer's pid, so the Source tracks users' handles open for
//     writing (Open, Create, Flush, Release callbacks) and the processes
//     that opened them or closed a descriptor of them (a child writing
//     through an inherited descriptor closes it, synchronously, before it
//     is gone). While such a handle is open, and for two seconds after
//     its release (the watch may be read late), a modify or attrib report
//     of the file is dropped if its pid is one of those processes or a
//     live descendant of one; any other process's change is reported,
//     also while the file is open through the mount and right after its
//     close (the kernel sends RELEASE after close(2) has returned, so a
//     rule keyed on RELEASE would take such a change for the writer's).
//   - inotify cannot tell, so the Source records what the daemon does, in
//     backing paths. Each op that changes the backing directory (create,
//     mknod, mkdir, symlink, link, unlink, rmdir, rename, setattr,
//     setxattr, removexattr, open with O_TRUNC) records in its
//     pre-callback the creation, removal or rename it is about to cause
//     (the watch may read it before the post-callback runs) and, in its
//     post-callback, the file's stamp after it; a create, remove or rename
//     of the same name and kind within two seconds is the op's, a modify or
//     attrib is while the op runs and afterwards as long as the stamp
//     holds. Every handle opened through the Source counts: while it is
//     open, modify and attrib reports of the file are the daemon's (its
//     writes, and filters' work on its fd: the HSM writes recalled data
//     with syscalls on a reopened fd, which no op shows); at its release, a
//     writable handle leaves the file's stamp as above (a change made
//     between the user's last close, a FLUSH, and the release is
//     reported then: see Limits), and a read-only
//     one leaves two seconds in which modify and attrib are the daemon's
//     (a recall started by a read may end after the reader closed). Writes,
//     fallocate and copy_file_range need no callback: they happen while
//     their handle is open. With fanotify these callbacks would be pure
//     cost, so they are registered only for inotify.
//
// A report judged by a stamp that finds no file, or another inode, under
// its name is stale: it was queued before the removal or replacement,
// whose own report follows. The stamp is read outside the source's lock,
// so a report that finds the file changed is the daemon's when one of its
// ops on the file (a rename among them: it moves ctime) began or ran
// meanwhile; and a stamp taken before another op's change never replaces
// that op's own (the later ctime wins).
//
// Nothing is lost silently: when the backing watch overflows (fanotify's
// or inotify's queue), cannot place a change, or a subscriber reads too
// slowly, a rescan event names the subtree to read again ("" for the
// whole mount). fanotify watches the whole file system; a change in a
// directory it cannot place (gone before its event was read) is one
// elsewhere on the file system, dropped silently, unless a directory made
// inside the tree was itself gone before the watch could take its handle:
// until that directory's removal is read, such changes are a rescan of it.
// When the watch itself fails (its read returns an error), it reports a
// rescan of everything, once, and the functions registered with
// [Notifier.OnBlind] run: a mount that keeps the kernel's caches long
// because this package invalidates them falls back to short timeouts.
//
// # Replaying changes for inotify watchers of the mount
//
// The kernel emits inotify events on a FUSE mount only for operations made
// through it; the FUSE notifications (NotifyEntry, NotifyContent) only
// invalidate caches. So the replay thread performs, on the mountpoint, the
// syscall that would have made the change found underneath: mknod, mkdir
// or symlink for a creation, unlink or rmdir for a removal, rename for a
// rename, lchown to the current owner for an attribute change, truncate to
// the current size for a modification. The kernel runs its ordinary VFS
// path and emits IN_CREATE, IN_DELETE, IN_MOVED_FROM/IN_MOVED_TO (one
// cookie), IN_ATTRIB and IN_MODIFY; the FUSE requests it sends carry the
// replay thread's id, and the bridge answers them from the current state
// without touching the backing directory (layer/replay_notify.go). Replay
// requests run as internal calls: they are not reported again, and since
// they change nothing underneath, the backing watch never sees them.
//
// Watchers of the event stream get a change found underneath after its
// invalidation, so a program that reacts to an event by looking through the
// mount sees the change (with long entry and attribute timeouts too). The
// price: while a request in flight holds a kernel lock that an invalidation
// needs (3 below), the events behind it wait.
//
// A replay happens after the invalidation of the same event (the kernel
// must look the names up again for the replayed syscall to reach the
// daemon), and the replay thread invalidates a created or renamed-to name
// once more right before its syscall, in case a lookup cached it again.
// The replay runs while subscribers already have the event, so what the
// bridge answers the replay thread's lookups (a stand-in for a removed
// name, "no such entry" for a created one) is never cached: a subscriber's
// stat racing with the replay asks the daemon again and gets the truth.
// Replay is skipped on read-only mounts (the kernel refuses every change
// before asking the daemon).
//
// # Why this cannot deadlock
//
// A deadlock needs a cycle of waits. The waits here are:
//
//  1. A FUSE request handler waits for the layers below it (filters, the
//     backing file system). No handler waits for a goroutine of this
//     package: the Filter's callbacks and FilterEvent only append to
//     bounded queues without blocking (a full queue drops the event and
//     leaves a rescan in its place), and take only short mutexes that no
//     one holds while waiting for anything.
//  2. The kernel, while it serves a request, holds locks on the inodes
//     involved (a directory's i_rwsem during LOOKUP, CREATE, RENAME; page
//     locks during READ) until the daemon answers.
//  3. A cache notification (INVAL_ENTRY, INVAL_INODE, DELETE) takes the
//     same kernel locks, so it waits for requests in flight on those
//     inodes (2). Notifications are only sent by the invalidator goroutine
//     and the replay thread, never by a request handler, so by (1) the
//     requests they wait for complete without them.
//  4. A replayed syscall waits for the kernel, which waits for the
//     daemon's answers to the requests it sends (2). Those requests are
//     answered on go-fuse's reader goroutines by the bridge's replay path,
//     which takes no lock of the bridge's that is held while waiting (it
//     reads two atomics and may take the inode-number index's mutex, held
//     for a map access only) and runs
//     only read-only ops down the stack, as any request does: by (1) it
//     does not wait for the replay thread or the invalidator.
//  5. The invalidator waits for kernel locks (3), for read-only ops down
//     the stack (the lookup that finds a changed name's inode number),
//     which by (1) wait for no goroutine of this package, and, never, for
//     the replay thread: it hands events over through a bounded queue without
//     blocking (a full queue drops the replay, counted and logged: inotify
//     watchers of the mount then miss that change; the watch stream and
//     the invalidation still have it).
//  6. The backing watch waits for nothing but its file descriptor and,
//     to judge a report by a file's stamp, a GetattrOp on the passthrough,
//     which waits only for the backing file system (never the mount); its
//     events are published synchronously up the stack, into (1)-style
//     non-blocking queues. The Source's callbacks take one short mutex,
//     which the watch never holds across a stat. fanotify and inotify notification events never
//     block the process that made the change: a full kernel queue
//     overflows, which becomes a rescan.
//
// Every wait points from the kernel or this package's goroutines towards
// request handlers and the backing file system, and none points back, so
// there is no cycle. Two more conditions keep it so: the replay thread is
// locked to its OS thread for its whole life (runtime.LockOSThread, never
// undone), so no other goroutine ever runs on the thread id the bridge
// recognises; and every request from that thread that would change
// anything other than what the declared replay op names is refused with
// EPERM, so the thread cannot change the backing directory whatever
// happens.
//
// # Limits
//
// The replay costs a few FUSE round trips per event (about 0.1-0.3 ms);
// under a flood of changes underneath it falls behind and drops (counted
// in [Stats]); the watch stream and the cache invalidation do not depend
// on it. The inotify fallback watches directories as it learns of them:
// entries made in a new directory before its watch exists are found by
// scanning it and reported as creations, but a short-lived entry can be
// missed. With inotify, the kernel sends RELEASE some time after the
// writer's last close(2) returned: a change made underneath in that moment
// is told from the writer's by the file's stamp at that close (FLUSH) and
// reported at the release, unless the daemon changed the file in that
// moment too or another handle of it is open (then it is taken for the
// daemon's); a write through a shared mapping left in place after the
// close is then reported twice, as the mount's and as a change
// underneath. A change another program makes to a file while the daemon
// has it open (or while one of its ops changes it, or within two seconds
// after a read-only handle of it was closed) is taken for the daemon's
// and not reported; the proper place to drop a filter's work on
// an fd (an HSM recall) is that filter's FilterEvent, which knows it
// exactly. fanotify needs CAP_SYS_ADMIN and a file system that supports
// file handles (ext4, xfs, btrfs, tmpfs); a FUSE or network backing
// directory falls back to inotify.
package notify
