package main

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vfsfilter/vfsfilter/layer"
)

// Long kernel caches by default.
//
// The kernel caches names and attributes for the timeouts each answer
// carries, and, with FOPEN_CACHE_DIR, whole directory listings across
// opens. Long timeouts save requests in metadata workloads (a warm ls -lR
// almost all of them, rm -rf of a tree just listed a sixth: its readdirs),
// but a cache the daemon does not hear about goes stale
// when something changes the backing directory directly. The notify
// filter hears about every such change: its fanotify watch invalidates
// what the kernel caches about the names involved within milliseconds
// (notify/doc.go). Where it does so for what users see, long
// timeouts are more coherent than the short ones, which leave a change
// unseen for up to a second, and the mount keeps its caches long by
// default:
//
//   - notify is on and its watch is fanotify, which sees every change on
//     the backing file system and tells the daemon's own apart. The
//     inotify fallback can miss an entry made in a directory before its
//     watch exists, so it keeps the short timeouts;
//   - the backing directory is on a local file system (the types below):
//     on a network file system the watch sees only this machine's
//     changes;
//   - nothing is mounted below the backing directory: the watch covers
//     the backing file system only (a mount made later is not noticed;
//     USAGE.md says so);
//   - no filter changes what users see behind the kernel's back: hsm's
//     migration and recall change st_blocks without invalidating it, and a
//     namespace bind grafts a directory the watch does not cover.
//
// The known gaps (hard links, shared mmap writes, a mount made later
// inside the backing directory) are listed in USAGE.md, "Kernel caches".
// Timeouts or --cache-dirs the user gave are kept as given. If the watch
// stops while the mount serves, the mount falls back to the short
// timeouts (layer.Server.LimitCaching) after the watch's last rescan
// invalidated everything.
const (
	longCacheTimeout  = 30 * time.Second
	shortCacheTimeout = time.Second
)

// localFS are the file-system types (statfs f_type) on which a change to
// the backing directory can only be made through this kernel, where the
// fanotify watch sees it.
var localFS = map[int64]string{
	unix.EXT4_SUPER_MAGIC:  "ext2/3/4",
	unix.XFS_SUPER_MAGIC:   "xfs",
	unix.BTRFS_SUPER_MAGIC: "btrfs",
	unix.TMPFS_MAGIC:       "tmpfs",
	unix.F2FS_SUPER_MAGIC:  "f2fs",
	0xca451a4e:             "bcachefs",
	0x2fc12fc1:             "zfs",
}

// mountBelow returns a mount point strictly inside dir (an absolute path),
// if there is one; unreadable mount tables count as one, to be safe.
func mountBelow(dir string) (string, bool) {
	if d, err := filepath.EvalSymlinks(dir); err == nil {
		dir = d
	}
	mounts, err := readMounts()
	if err != nil {
		return "unknown: " + err.Error(), true
	}
	prefix := strings.TrimSuffix(dir, "/") + "/"
	for _, m := range mounts {
		if strings.HasPrefix(m.MountPoint, prefix) {
			return m.MountPoint, true
		}
	}
	return "", false
}

// caching is what the kernel may cache, chosen for one mount.
type caching struct {
	entry, attr time.Duration
	cacheDirs   bool
	// long: something was raised by default, so it must fall back when
	// the watch stops; entryLong, attrLong, dirsLong say what.
	long, entryLong, attrLong, dirsLong bool
	// why says why the defaults stayed short (for the log), if they did.
	why string
}

// chooseCaching applies the rule above to cfg's timeouts. watcher is the
// notify filter's watch ("" without notify), incoherent the reasons filters
// gave why the kernel's caches would go stale.
func chooseCaching(cfg *mountConfig, backing, watcher string, incoherent []string) caching {
	c := caching{entry: cfg.entryTimeout, attr: cfg.attrTimeout, cacheDirs: cfg.cacheDirs}
	switch {
	case cfg.noNotify || watcher == "":
		c.why = "no notify filter"
	case watcher != "fanotify":
		c.why = fmt.Sprintf("the backing watch is %s, which can miss changes", watcher)
	case len(incoherent) > 0:
		c.why = incoherent[0]
	default:
		var st unix.Statfs_t
		if err := unix.Statfs(backing, &st); err != nil {
			c.why = fmt.Sprintf("statfs: %v", err)
		} else if _, ok := localFS[int64(st.Type)]; !ok {
			c.why = fmt.Sprintf("the backing file system (type %#x) is not known to be local", st.Type)
		} else if at, ok := mountBelow(backing); ok {
			c.why = fmt.Sprintf("a file system is mounted inside the backing directory (%s), where the backing watch does not reach", at)
		}
	}
	if c.why != "" {
		return c
	}
	if !cfg.entrySet {
		c.entry, c.long, c.entryLong = longCacheTimeout, true, true
	}
	if !cfg.attrSet {
		c.attr, c.long, c.attrLong = longCacheTimeout, true, true
	}
	if !cfg.cacheDirsSet {
		c.cacheDirs, c.long, c.dirsLong = true, true, true
	}
	return c
}

// fallBack makes srv cache briefly from now on what it caches long by
// default (timeouts the user gave stay); the watch that kept those caches
// correct has stopped.
func (c caching) fallBack(srv *layer.Server, log *slog.Logger) func() {
	entry, attr := kernelTimeout(c.entry), kernelTimeout(c.attr) // as mounted
	if c.entryLong {
		entry = shortCacheTimeout
	}
	if c.attrLong {
		attr = shortCacheTimeout
	}
	return func() {
		log.Warn("the backing watch stopped: the kernel's caches fall back to short timeouts", "timeout", shortCacheTimeout)
		srv.LimitCaching(entry, attr, !c.dirsLong)
	}
}
