// Package hsm is vfsfilter's hierarchical storage management filter: the
// data of cold files moves to a secondary store (a directory or an S3
// bucket), a stub stays in the backing directory, listings and file
// information still show the real size, and access brings the data back
// without the application noticing. It is the HSM filter of the NT
// filter-driver books, at altitude layer.AltitudeHSM: below crypt, so only
// ciphertext ever leaves the machine.
//
// # Parts
//
//   - stub.go: the state record (binary, versioned, CRC-32C) and the object
//     format (data, per-chunk SHA-256 list, extent map, footer), pinned by
//     golden files in testdata/hsm. Pure code.
//   - store.go, dirstore.go, s3store.go: the Store contract and its two
//     implementations (local directory with fsync + rename; S3 through
//     minio-go, multipart uploads, ranged GETs, AWS_* configuration).
//   - filter.go: the layer.Filter callbacks.
//   - recall.go: the shared, progressive, verified recall.
//   - migrate.go: two-phase migration.
//   - journal.go: the journal of work in flight and crash recovery.
//   - control.go: status, pin and the hsm.* control-socket methods.
//
// # States
//
// A file's state lives with the file, in the extended attribute XattrName
// (trusted.vfsfilter.hsm), which the filter hides: it is not listed, reads
// say ENODATA, writes and removals EPERM. It holds a random file ID (the
// object key, so a renamed or hard-linked stub still recalls), the real
// size, the mtime at migration, the chunk size, the root hash of the
// object's trailer, the pinned flag and the state:
//
//	resident     local only (no record, or one that only says "pinned")
//	premigrated  local, and a verified copy in the store
//	migrated     in the store only: the local file is a stub
//
// A stub is the backing file truncated to 0 bytes, keeping its name, inode,
// mode, owner, times and xattrs. Truncating (rather than leaving a sparse
// file of the real size) fails closed: anything that bypasses the filter
// sees an empty file, never a file of the right size full of zeros. The
// filter puts the real size back into Lookup, Getattr, Setattr, Create and
// Link replies (readdirplus goes through Lookup); mtime is right for free
// because migration restores it on the stub. st_blocks is what is local: 0
// for the data of a stub (ext4 may count one 4 KiB block for the record).
// Only an empty regular file can be a stub that shows the wrong size, so
// the size fix costs nothing (no syscall, no allocation) for any other
// file, and one getxattr the first time an empty file is seen: the answer
// is cached by (inode, ctime), so later lookups and stats of it cost none.
//
// # Opens, reads and recall
//
// Every open of a regular file reads the record (one fgetxattr). A resident
// or premigrated file keeps FUSE passthrough: the kernel reads it directly.
// A migrated file is opened in daemon mode, so the filter sees its reads;
// the bridge keeps all opens of an inode in one mode while any is open.
//
// The first read of a stub starts its recall; all readers of the file
// share the one recall in flight (a map keyed by file ID), and a recall
// never holds a lock another file needs. The recall works in place: it
// reads the trailer (one ranged read) and checks it against the record's
// root hash, extends the stub to its real size (sparse), then streams the
// object, verifying each chunk's SHA-256 before writing it and restoring
// the holes the file had (the extent map). A read waits until its range is
// written, or, when it lies more than Config.ReadWindow ahead of the
// recall, is served by a ranged read of the chunks it needs, verified the
// same way. The first byte of a large file therefore costs one chunk
// (1 MiB by default). The recall starts the writeback of every 16 MiB it
// has written (sync_file_range, which only starts I/O), so the disk works
// while later chunks are hashed and the one fdatasync at the end has
// little left to do. At the end, the mtime is restored, the data synced,
// and only then does the record say premigrated: the data is local and
// still in the store, so migrating it again is a metadata operation.
// Later opens use passthrough again.
//
// A recall that fails (store down, object missing, checksum mismatch, no
// progress for Config.Timeout, daemon stopping) truncates the file back to
// an empty stub with its old mtime, under a lock that keeps readers from
// seeing the rollback; its readers get EIO and one log line names the
// file. The record never changed, so the stub is the stub it was. The next
// read starts a new recall. Data is never served unverified, never as
// zeros, never truncated.
//
// # Writes
//
// O_TRUNC, truncate to 0 and replacing a file (write a new file, rename it
// over the stub) discard a stub's data without recalling it: the file just
// becomes resident. So does a full overwrite in place, written in order
// from offset 0 (dd conv=notrunc, an editor rewriting in place): the first
// write at offset 0 on a writable handle of a stub starts an overwrite
// (overwrite.go), and each write of that handle at the end of the prefix
// [0, n) written so far goes to an unlinked temporary file under
// .vfsfilter/hsm, never to the stub. When n reaches the real size, the
// record goes (as for O_TRUNC: resident, the object deleted in the
// background) and the prefix is copied into the file: no recall. Until
// then the stub is untouched, so a crash loses only the unsynced writes.
//
// Anything that needs the old data before that point (a read from any
// handle, SEEK_DATA/SEEK_HOLE, a write elsewhere or from another handle,
// fallocate, copy_file_range, a truncate to a non-zero size, or a flush
// (close) or fsync of the writing handle) first recalls the whole file
// into the stub as usual, makes it resident and lays the prefix over
// [0, n). If that recall fails, the call gets EIO and the stub is the
// intact stub it was (the recall rolls back as always); the prefix is kept
// until the handle is released and then dropped, so a close that said EIO
// leaves the old file, never a short or zero-filled one. A truncate to 0
// or an O_TRUNC open drops an overwrite in progress. Writes that must
// clear set-user-ID bits do not take this path.
//
// Any other write, fallocate, copy_file_range into, or truncate to a
// non-zero size of a stub first recalls the whole file (lazily, at the
// first such call, so an O_RDWR open that only reads costs no more than a
// read). Any change to a premigrated file makes it resident and deletes its
// object in the background. rename, link, chmod, chown, utimes and xattr
// calls never recall.
//
// # Unlink and garbage
//
// Unlinking the last name of a stub or premigrated file that nobody has
// open deletes its object (in the background; a failure leaves garbage in
// the store, logged). Objects of files that are open while unlinked, of
// files replaced by a rename, and of files removed behind the mount's back
// stay in the store as garbage. There is no garbage collector yet.
//
// # Migration and crash safety
//
// Migration runs in the daemon (the hsm.migrate control method) and is two
// phase (see Filter.Migrate): copy to the store with a per-chunk hash list,
// verify the object in the store, and record premigrated if the file did
// not change; then, if no one has it open, record migrated and only then
// truncate the local data. Open files are skipped: a reader in passthrough
// mode could not be made to wait for a recall. An open that arrives during
// the copy makes the file stay premigrated; one that arrives during the
// release waits the few syscalls it takes, then sees a stub. A file that
// changes during the copy (size, mtime or ctime) stays resident and its
// object is deleted.
//
// Every migration and recall is journaled in BACKING/.vfsfilter/hsm/journal
// before it touches the file or the store. After a crash (kill -9, power
// loss), the next mount's recovery looks at each journaled file's record:
// an object whose file never got a record is deleted; a file recorded
// migrated that still has data is released; a half-recalled stub is
// truncated back to an intact stub. Whatever the moment of the crash, each
// file ends resident, premigrated or migrated, with its data. (Even without
// recovery the filter would be correct: a file recorded migrated is
// recalled in full before any read; recovery restores the space and tidies
// the store.) Recovery opens files itself, relative to the backing
// directory with RESOLVE_BENEATH, because it runs while the stack is
// built, before ops can be sent below.
//
// # Notifications
//
// All the filter's own I/O is on fds the layer below opened (or reopened
// through /proc/self/fd, which reaches the same inode whatever was renamed
// since) and below the notify filter, and the journal lives in the hidden
// .vfsfilter directory, so no migration or recall write reaches users'
// watches.
//
// # Choices, with reasons
//
//   - In-place recall rather than a temporary file renamed over the stub: a
//     rename would change the inode number (breaking hard links and the
//     kernel's inode), and copying from a temporary file would halve the
//     recall's speed. The journal makes the in-place fill crash safe.
//   - Binary record rather than JSON: it is read on hot paths and has one
//     valid encoding; the CRC makes a damaged record an error (EIO), never
//     "resident", which would show an empty file.
//   - A per-chunk hash list authenticated by one root hash, rather than one
//     checksum of the whole file: it is what allows the first byte to be
//     served verified before the rest has arrived, and ranged reads.
//   - --older-than compares the later of atime and mtime (cold = neither
//     read nor written lately); the filter's own reads use O_NOATIME.
package hsm
