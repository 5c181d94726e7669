// Package layer is the filter stack of vfsfilter: the Windows filter-driver
// model, brought to a FUSE file system in user space.
//
// # The model
//
// A mount shows a backing directory through a [Stack] of filters. Every FUSE
// request becomes an [Op] (a *LookupOp, *ReadOp, ...) that travels from the
// top filter down to the [Passthrough] at the bottom, which completes it on
// the backing directory with *at syscalls.
//
//	kernel <-> go-fuse <-> bridge -> notify -> namespace -> crypt -> hsm -> passthrough <-> backing dir
//
// Filters are ordered by altitude ([Filter.Altitude]); the highest sees a
// request first. The order follows from what each filter must see: namespace
// rules are written in the names users type, so namespace sits above crypt;
// only ciphertext may leave the machine, so hsm sits below crypt; notify
// reports what users see, after every translation, so it sits on top.
//
// # Callbacks
//
// A filter registers, in [Filter.Attach], a pre-operation callback, a
// post-operation callback or both, per kind of op, with [OnPre] and [OnPost].
// This mirrors a minifilter's FLT_OPERATION_REGISTRATION:
//
//   - a pre-callback returns [Continue] (pass the op down, call my post
//     callback on the way back), [ContinueNoPost], or [Complete] (I filled in
//     the result; nothing below runs). It may change the op's inputs: the
//     namespace filter rewrites a visible path into the backing path.
//   - a post-callback sees the errno from below and may change the op's
//     outputs and errno: an HSM filter puts a stub's real size into Getattr
//     and listings.
//   - when a filter completes an op, the post-callbacks of the filters above
//     it still run, its own does not.
//
// The stack keeps, per kind of op, the list of filters that registered for
// it: an op no filter registered goes straight to the passthrough and costs
// one slice walk.
//
// # A filter's own I/O goes below it
//
// A filter that needs I/O of its own (HSM reading a file to migrate it,
// crypt reading a header) sends ops to [Attachment.Below], which starts at
// the next filter down. It never uses the mountpoint: that would re-enter the
// stack from the top, through the kernel, while the kernel may hold locks
// for the request being served, and deadlock. Such calls carry
// [Call.Internal], so they never turn into user-visible events.
//
// # Pending is normal
//
// An op may complete at once or after long work (an HSM recall). Callers and
// tests never depend on which. Long work watches the [Call]'s context, which
// go-fuse cancels when the kernel interrupts the request (the caller got a
// signal), returns EINTR then, and holds no lock that other files need.
//
// # Contexts
//
// Each filter has one context slot on every [Node] (per inode the kernel
// knows) and on every [Handle] (per open file): [Attachment.NodeContext],
// [Attachment.HandleContext]. Crypt keeps a file's id and block lock there,
// HSM its single in-flight recall.
//
// # Events
//
// A change found underneath (a watch on the backing directory) is published
// with [Attachment.Publish] and travels up through every filter above that
// implements [EventFilter], each of which translates names or drops the
// event, then reaches [Stack.Subscribe]rs in the names users see.
//
// # FUSE passthrough, per inode
//
// For a regular file that no filter needs to see, the bottom layer sets
// [Handle.Passthrough] and the bridge registers the backing fd with the
// kernel: reads, writes and mmap then never reach the daemon. The kernel
// decides this per inode: while an inode is open in passthrough mode, an
// open in the other mode fails with EIO, and the reverse. So a filter that
// must see a file's data clears Handle.Passthrough in its Open/Create post
// callback for every open of that file, and the bridge keeps every open of
// one inode in one mode: an open that would need the other mode while
// handles are open gets EBUSY, with a log line, instead of a later EIO.
//
// # Files without a name
//
// An open file can outlive its name: unlinked, removed or replaced
// underneath, or made with O_TMPFILE. Ops on such a node carry a path no
// entry has ([Unreachable] recognises it) and, where the kernel sends no
// handle (xattr ops, chmod and friends, statx, the link that names an
// O_TMPFILE file), one of the node's own open handles, lent by the bridge.
// The passthrough then acts through the handle's fd, as ext4 acts on the
// open inode. A filter that rewrites paths must let such an op through to
// its handle instead of failing on the path, and one that reports changes
// by name reports none for it.
//
// # Paths and safety
//
// Ops carry paths relative to the root, in the names of the layer that sees
// them. The passthrough resolves every directory on the way with openat2 and
// RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, and never follows a final symlink, so
// neither a symlink planted in the backing directory nor a rename racing with
// a request can lead outside it. Symlinks are returned to the kernel as
// symlinks; the kernel follows them inside the mount. One exception in how
// often, not in how: the lookups of one READDIRPLUS request share the
// directory fd the first of them resolved from the root (scope.go argues
// why that keeps the guarantee; it is only ever used for fstatat of plain
// names during that request).
//
// # Errors
//
// Only syscall.Errno crosses the stack: it is what the caller's syscall
// returns. [ToErrno] is the one mapping from Go errors; an error with no
// errno becomes EIO, never ENOSYS, and the filter that produced it logs one
// line naming the file.
//
// # Caching
//
// The kernel caches names and attributes for the entry and attribute
// timeouts of [MountOptions] (1 s by default, as go-fuse's loopback), and
// directory listings across opens with [MountOptions.CacheDirs]. Longer
// timeouts and cached listings make metadata-heavy work (ls -lR) several
// times faster but are only correct when changes made directly in the
// backing directory invalidate the kernel's caches: [Server.Invalidate],
// which the notify filter calls for every change its backing watch sees.
// They stay opt-in until every filter's own changes (an HSM migration
// changing st_blocks) invalidate too.
//
// # Extended attributes and ACLs
//
// With allow_other (or [MountOptions.KernelPermissions]) the kernel checks
// permissions itself (default_permissions), with the backing files' POSIX
// ACLs, which it caches per inode. Otherwise only the mount's owner can
// enter, the daemon acts with the owner's rights and the backing file
// system checks: that saves a round trip per entry created or removed (the
// kernel forgets a directory's attributes when it changes and needs them
// for its own checks). On a host without
// SELinux a missing security.selinux label is answered "not supported"
// rather than "no data": ls -l asks every file for it and the kernel never
// caches a FUSE file system's answer, while ls stops asking a device that
// does not support labels. Existing labels are returned as they are.
package layer
