package layer

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// MountOptions configures a mount.
type MountOptions struct {
	// ReadOnly mounts read-only (the kernel refuses writes with EROFS).
	ReadOnly bool
	// AllowOther lets other users use the mount. It implies
	// KernelPermissions.
	AllowOther bool
	// KernelPermissions makes the kernel check permissions itself
	// (default_permissions) with the backing files' POSIX ACLs, which it
	// then caches per inode: a warm `ls -l` costs no GETXATTR of
	// system.posix_acl_access per entry. The price: the kernel needs a
	// directory's attributes for every permission check in it and drops
	// them whenever an entry is created or removed there, so every
	// create, unlink or rename after the first in a directory costs one
	// more round trip (GETATTR): rm -rf sends half again as many
	// requests, an untar a tenth more.
	//
	// Without allow_other only the mount's owner can enter the mount (the
	// kernel refuses everyone else), and the daemon acts on the backing
	// files with the owner's rights (as root for a root mount), so the
	// backing file system's own checks, ACLs included, give the same
	// answers; POSIX ACLs are still stored and read through getfacl and
	// setfacl. With allow_other the kernel must check, so it is on.
	KernelPermissions bool
	// Debug logs every FUSE request and reply.
	Debug bool
	// Options are extra kernel mount options ("nosuid", "noatime", ...).
	Options []string
	// EntryTimeout, AttrTimeout and NegativeTimeout are how long the kernel
	// may cache names, attributes and failed lookups. Zero means the
	// defaults (1s, 1s, none); for "no caching" give 1ns, which the kernel
	// rounds to one jiffy. Longer timeouts are faster but only correct
	// when nothing changes the backing dir behind the mount's back.
	EntryTimeout, AttrTimeout, NegativeTimeout time.Duration
	// CacheDirs lets the kernel keep directory listings in its page cache
	// across opens (FOPEN_CACHE_DIR), so a warm listing costs no request.
	// Like long timeouts, it is only correct when changes made directly
	// in the backing dir invalidate the cache.
	CacheDirs bool
	// WritebackCache lets the kernel buffer writes in its page cache and
	// send them in large, asynchronous requests. It excludes FUSE
	// passthrough (the kernel refuses passthrough opens then), so only a
	// stack whose filters see every file's data (crypt) should ask for it.
	WritebackCache bool
	// FsName is shown as the source in /proc/mounts ("vfsfilter" when
	// empty; the command line passes the backing path).
	FsName string
	// Logger receives the daemon's log lines; nil means slog.Default().
	Logger *slog.Logger
}

// Server is a live mount.
type Server struct {
	srv        *fuse.Server
	root       *node
	stack      *Stack
	mountpoint string
	readOnly   bool
}

// Mount serves stack at mountpoint and returns once the kernel can use it.
func Mount(mountpoint string, stack *Stack, opts MountOptions) (*Server, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	br := &bridge{
		stack:  stack,
		log:    logger,
		negTTL: opts.NegativeTimeout,
	}
	entry, attr := opts.EntryTimeout, opts.AttrTimeout
	if entry == 0 {
		entry = time.Second
	}
	if attr == 0 {
		attr = time.Second
	}
	br.entryTTL.Store(int64(entry))
	br.attrTTL.Store(int64(attr))
	br.cacheDir.Store(opts.CacheDirs)
	root := &node{br: br}
	rootAttr := &GetattrOp{Path: ""}
	if errno := stack.Do(InternalCall(context.Background()), rootAttr); errno != 0 {
		return nil, fmt.Errorf("stat backing root: %w", errno)
	}

	mo := fuse.MountOptions{
		AllowOther:  opts.AllowOther,
		FsName:      opts.FsName,
		Name:        "vfsfilter",
		Debug:       opts.Debug,
		EnableLocks: true,
		// POSIX ACLs: see MountOptions.KernelPermissions. The kernel
		// turns default_permissions on with them.
		EnableAcl:     opts.KernelPermissions || opts.AllowOther,
		DirectMount:   true,
		MaxWrite:      1 << 20,
		MaxReadAhead:  1 << 20,
		MaxBackground: 64,
		// Every read reply is bytes in memory (a filter may have changed
		// them; plain files go by FUSE passthrough). With splice on,
		// go-fuse still takes a pipe, writes the reply header into it and
		// drains it again before falling back to writev: two wasted
		// system calls per READ, or a failed pipe resize logged for each
		// 1 MiB one.
		DisableSplice: true,
		Logger:        log.New(slogWriter{logger}, "", 0),
	}
	mo.DirectMountFlags, mo.Options = mountFlags(opts.Options)
	if opts.WritebackCache {
		mo.ExtraCapabilities |= fuse.CAP_WRITEBACK_CACHE
	}
	if opts.ReadOnly {
		// As a mount flag, so that /proc/mounts says "ro" and the VFS
		// refuses writes before they reach us.
		mo.DirectMountFlags |= syscall.MS_RDONLY
	}
	if os.Geteuid() == 0 {
		// Root mounts directly; if mount(2) fails, its error is the one
		// to report, not that of a fusermount fallback.
		mo.DirectMountStrict = true
	}
	if opts.AllowOther || opts.KernelPermissions {
		// Implied by EnableAcl; named so that /proc/mounts shows it.
		mo.Options = append(mo.Options, "default_permissions")
	}
	if !opts.AllowOther {
		// Without HANDLE_KILLPRIV_V2 the kernel asks for
		// security.capability before every write(2), passthrough
		// writes included, and never caches the answer: writes run at
		// half speed. With it the kernel leaves clearing set-user-ID
		// bits and capabilities on write to the server. Passthrough
		// writes reach the backing file as the daemon (root), which a
		// local file system would treat like a write by root: correct
		// while only root can use the mount, which is the case without
		// allow_other. With allow_other, other users write too, so the
		// kernel must keep doing it.
		mo.ExtraCapabilities |= fuse.CAP_HANDLE_KILLPRIV_V2
	}
	fo := &fs.Options{
		MountOptions: mo,
		// No default timeouts: every answer of the bridge sets its own
		// (newChild, Getattr, Setattr, lookup), and go-fuse must leave a
		// zero alone. The replay thread's stand-in entries rely on it:
		// cached for even one jiffy, a stat racing with the replayed
		// unlink would find the removed name again (replay_notify.go).
		Logger: log.New(slogWriter{logger}, "", 0),
		// The root keeps the backing root's inode number, as every other
		// entry does.
		RootStableAttr: &fs.StableAttr{Mode: syscall.S_IFDIR, Ino: rootAttr.Out.Ino},
		// Modes are the backing file's, 0 included. Without this go-fuse
		// shows a file of mode 0000 as 0644, and with allow_other (so
		// default_permissions) the kernel would let every user read a
		// file that its owner had made unreadable.
		NullPermissions: true,
	}
	if br.negTTL > 0 {
		// go-fuse turns ENOENT into a cacheable negative entry only
		// through this option, and only when the lookup left the
		// entry's timeout at zero.
		fo.NegativeTimeout = &br.negTTL
	}
	// Created files get the umask applied once, by the kernel, before the
	// mode reaches us; the daemon's own umask must not apply a second time.
	// This changes the umask of the whole process: a program that mounts
	// in-process and creates files itself must pass the modes it wants.
	syscall.Umask(0)
	srv, err := fs.Mount(mountpoint, root, fo)
	if err != nil {
		return nil, err
	}
	return &Server{srv: srv, root: root, stack: stack, mountpoint: mountpoint, readOnly: opts.ReadOnly}, nil
}

// mountFlags splits mount options into mount(2) flags and the options the
// kernel takes as data. The access-time options are flags of the mount, not
// of the file system: given as data, the kernel refuses the mount (EINVAL).
// The base is what fusermount does: nosuid and nodev unless "suid"/"dev".
func mountFlags(options []string) (uintptr, []string) {
	flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV)
	var data []string
	for _, o := range options {
		switch o {
		case "noatime":
			flags |= syscall.MS_NOATIME
		case "atime":
			flags &^= syscall.MS_NOATIME
		case "nodiratime":
			flags |= syscall.MS_NODIRATIME
		case "diratime":
			flags &^= syscall.MS_NODIRATIME
		case "relatime":
			flags |= syscall.MS_RELATIME
		case "norelatime":
			flags &^= syscall.MS_RELATIME
		case "strictatime":
			flags |= syscall.MS_STRICTATIME
		case "nostrictatime":
			flags &^= syscall.MS_STRICTATIME
		default:
			// nosuid/suid, nodev/dev, noexec/exec are turned into
			// flags by go-fuse; ro, sync, dirsync, lazytime the kernel
			// takes as data.
			data = append(data, o)
		}
	}
	return flags, data
}

// Wait blocks until the file system is unmounted.
func (s *Server) Wait() { s.srv.Wait() }

// Unmount unmounts the file system and waits until it stopped serving. It
// retries for a second while the mount is busy, then returns an error that
// wraps syscall.EBUSY.
func (s *Server) Unmount() error {
	if os.Geteuid() != 0 {
		// Only fusermount can unmount for an unprivileged daemon.
		return s.srv.Unmount()
	}
	var err error
	for i := 0; i < 20; i++ {
		if err = unix.Unmount(s.mountpoint, 0); err == nil {
			s.srv.Wait()
			return nil
		}
		if err != unix.EBUSY {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("unmount %s: %w", s.mountpoint, err)
}

// LimitCaching caps what the kernel is told to cache from now on: names
// and attributes for at most entry and attr, and directory listings across
// opens only if keepDirs (and they were kept so far). Answers already
// given keep their timeouts. It is for a mount whose long caches were
// correct only because changes made underneath invalidate them (the notify
// filter's backing watch): when that stops, the caches fall back to
// timeouts that bound how stale they get. Safe to call from any goroutine,
// any number of times; it never raises anything.
func (s *Server) LimitCaching(entry, attr time.Duration, keepDirs bool) {
	br := s.root.br
	for _, c := range []struct {
		v   *atomic.Int64
		max time.Duration
	}{{&br.entryTTL, entry}, {&br.attrTTL, attr}} {
		for {
			cur := c.v.Load()
			if cur <= int64(c.max) || c.v.CompareAndSwap(cur, int64(c.max)) {
				break
			}
		}
	}
	if !keepDirs {
		br.cacheDir.Store(false)
	}
}

// Mountpoint returns where the file system is mounted.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Stack returns the stack the server serves.
func (s *Server) Stack() *Stack { return s.stack }

// KernelFlags reports the capabilities negotiated with the kernel.
func (s *Server) KernelFlags() uint64 { return s.srv.KernelSettings().Flags64() }

// slogWriter routes go-fuse's log.Logger output to slog.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Debug(strings.TrimRight(string(p), "\n"), "source", "go-fuse")
	return len(p), nil
}
