// Package crypt is vfsfilter's encryption filter: transparent,
// authenticated encryption of file contents, names, symlink targets and
// user extended attributes, after gocryptfs's design, as a filter at
// layer.AltitudeCrypt (below namespace, so rules speak plaintext; above
// HSM, so only ciphertext ever reaches a secondary store).
//
// # Parts
//
//   - keys.go: the settings section (Config). A random 256-bit master key
//     is wrapped with AES-256-GCM under a key derived from the passphrase
//     by scrypt (stored N, r, p, salt; default 2^16, 8, 1). The format
//     version, block size and feature flags are the wrapping's additional
//     data, so none of them can be changed without the passphrase. The
//     content, name, xattr-name and xattr-value keys are derived from the
//     master key with HKDF-SHA256 under distinct labels. Changing the
//     passphrase rewraps the master key only. Four feature flags are
//     required; FeatureXattr is optional: init sets it, trees made before
//     it lack it and keep their old behaviour (below).
//   - content.go: the content codec. A file is an 18-byte header (version,
//     random 128-bit file id) and blocks of 4 KiB plaintext, each
//     nonce(16) || AES-256-GCM ciphertext || tag(16), with block number ||
//     file id as additional data. Sizes convert both ways from the size
//     alone (PlainSize, CipherSize). An empty file has no header.
//   - names.go: EME (wide-block) encryption of names under a per-directory
//     random IV (the directory's vfsfilter.diriv file), base64url; names
//     longer than 255 bytes encrypted are stored as
//     vfsfilter.longname.<sha256> with a .name side file. Symlink targets
//     are encrypted as one content block with an all-zero file id.
//   - xattr.go: extended attributes (trees with FeatureXattr). user.*
//     names are encrypted with EME under their own key and a fixed
//     (all-zero) tweak, deterministic so that a name finds its stored
//     form, and stored as user.vfsfilter.<base64url>; values are
//     nonce(16) || AES-256-GCM || tag(16) under another key, with the
//     plaintext name as additional data, so a value cannot be moved to
//     another attribute. Sizes convert from the size alone (a getxattr
//     size query decrypts nothing); listxattr decrypts every name, since
//     its size is the plaintext list's. system.*, security.* and
//     trusted.* pass through: the kernel below enforces POSIX ACLs and
//     reads capabilities and labels, and filters below keep their own
//     trusted.* attributes (the HSM's record).
//   - filter.go, paths.go, io.go: the glue; namecache.go: the name
//     cache. fsck.go: the offline checker.
//
// # Deviations from gocryptfs, and why
//
//   - The reserved names are vfsfilter.* (gocryptfs.diriv and friends in
//     gocryptfs): the format is not gocryptfs's (key derivation, AAD of the
//     master key, config), so a gocryptfs tree must not look like one.
//   - The directory IV cache maps plaintext directory paths to both the
//     ciphertext path and the IV (gocryptfs caches IVs by ciphertext
//     path), so a request costs one name encryption, not one per path
//     component. Renames and removals through the mount invalidate the
//     subtree; changes made directly in the backing directory are seen
//     after the TTL (1 s), like the kernel's own caches.
//   - Name encryptions and decryptions are cached (namecache.go): every
//     request on a path encrypts its leaf again (a created file is
//     looked up, created, its xattrs read, its attributes set: the same
//     name four times or more), and EME costs about 2 µs and ten
//     allocations a call. Under one key, a name's encryption depends on
//     the name and the directory's IV only, so an entry (keyed by both)
//     never goes stale; each direction is bounded (cleared at 8192
//     entries).
//   - Writes remember what they left (io.go, writeCache): the ciphertext
//     size and the plaintext of the partial last block, so that
//     sequential writes (tar writes 10 KiB records: every second one
//     starts inside a block) need neither an fstat nor a read and
//     decryption of that block. The cache lives in the per-file state,
//     only while the file is open, and is dropped by every open of the
//     file, truncate, fallocate and failed write. Before each use, the
//     size below is checked with one lseek(SEEK_END) (cheaper than the
//     fstat it replaces), so a change made below the mount that changes
//     the size (a truncation, an append, a restore) is seen and never
//     makes crypt write a block where the old size said, or without a
//     header. A change below that keeps the size is not seen: the next
//     write through the mount merges with the last block as crypt last
//     wrote it. That is a lost update between two uncoordinated writers
//     of ciphertext, never invalid ciphertext, and such writers were not
//     supported before (crypt keeps the file id per open file; see
//     Known limits).
//   - Open files keep the kernel's page cache across opens (KeepCache).
//     gocryptfs does not, so each open rereads and redecrypts. This is
//     correct because every change to a file's plaintext passes through
//     the mount; a change made below the mount (another mount of the same
//     backing directory, a restore) changes mtime and size, and go-fuse
//     negotiates FUSE_AUTO_INVAL_DATA, so the kernel drops the cache when
//     it next refreshes the attributes.
//   - Per-file state (block lock, file id) is keyed by the backing inode
//     number, not the layer's node context: Create has no node yet when its
//     callbacks run, and every handle of one inode (hard links too) must
//     share one lock.
//   - No FUSE writeback cache (as gocryptfs). It was tried: sequential
//     writes gained nothing measurable (the daemon is bound by encryption
//     and copies; the cache adds one copy through the page cache), and it
//     breaks two things. The kernel does not write dirty pages back
//     before FUSE_LSEEK, so SEEK_DATA/SEEK_HOLE miss data not yet written
//     back (the SeekDataHole scenario fails); and it trusts its own size
//     and mtime over the daemon's, so changes made below are not seen.
//   - Write-behind instead (behind.go): a large WRITE (128 KiB or more)
//     is answered once its ciphertext is made, and written below on a
//     goroutine while the writer copies in its next request. Its space
//     is allocated first, so a full disk still fails the write(2)
//     itself; everything that reads or changes the file below waits for
//     it; a write below that fails all the same (an I/O error) is
//     reported by the next fsync or close, as a page cache's writeback
//     error is. Not for O_SYNC/O_DSYNC files; Options.SyncWrites turns
//     it off. A daemon killed by SIGKILL can lose the last answered
//     write of each file being written (at most 1 MiB each).
//   - fallocate: allocating allocates the ciphertext of the range below
//     (FALLOC_FL_KEEP_SIZE; the size is crypt's to set), which keeps
//     fallocate's promise (a later write there finds its space) without
//     writing a byte: a large allocation is instant and stays sparse, as in
//     gocryptfs. Punching makes whole blocks holes below and rewrites
//     partial ones; zeroing is punching plus allocation, as ext4 leaves a
//     zeroed range as unwritten extents. SEEK_DATA/SEEK_HOLE report a
//     block as a hole when its ciphertext is all zeros (a hole, or
//     allocated and never written), which with 4 KiB blocks agrees with
//     ext4 except over zeros: ext4 reports its unwritten extents as holes
//     until a read brings their pages into its cache, then as data. The
//     exerciser checks op by op that answers differ at most across zeros.
//   - copy_file_range copies through plaintext (blocks are bound to their
//     file and position, so ciphertext cannot be copied).
//   - Extended attributes: the stored prefix is user.vfsfilter. and the
//     names and values have keys of their own, not the file name and
//     content keys. A value's additional data is its plaintext name,
//     which binds it to its attribute. Plaintext names whose stored form
//     would exceed the kernel's 255 bytes (more than MaxXattrPlainName,
//     180, bytes) are refused with ERANGE, the kernel's error for long
//     names: the stored form of a name is needed to find it, so there is
//     no hashed long form as for file names.
//
// # Durability of directory IVs and long-name side files
//
// Entries depend on two kinds of small files crypt writes: a directory's
// IV file (every name in the directory is encrypted under it) and a long
// name's side file (the entry's name is only a hash of it). Either lost in
// a crash while entries that depend on it survive makes those entries
// unreadable for good; the reverse (an IV without entries, a side file
// without its entry) is harmless.
//
// gocryptfs does not sync these files at all. crypt writes each one and
// then stores the same bytes in the extended attribute CopyXattr of the
// new file, before anything that depends on it is created (paths.go,
// writeSmall). An extended attribute is metadata: ext4 and XFS journal it,
// every entry created afterwards is in the same transaction or a later
// one, and their journals commit (and an fsync of a later entry forces
// them) in order. So after a crash an entry
// implies the copy, even when the content itself never reached the disk
// (an empty file, or 16 zero bytes where ext4's dioread_nolock had only
// allocated an unwritten extent). crypt reads the copy first and the
// content only where the copy is missing: trees from before the copy,
// copies of the backing directory made without extended attributes
// (which hold the content as written back), file systems without them.
//
// This costs a setxattr per mkdir. crypt used to wait for the content's
// write instead, with sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER):
// a device round trip per mkdir (MKDIR took 407 us against 143 us now,
// median, untarring Go's source tree onto a loop-mounted ext4 here), and
// before that an fsync, which also forces a journal commit (1.2 ms).
// Where the copy cannot be set (no extended attributes below, a virtual
// file of a filter below) crypt still does that (settle), and its
// ordering argument is:
//
//   - When the call returns, the data is on the device, and on ext4 (any
//     data= mode) and XFS everything needed to find it (block allocation,
//     on-disk size, and the conversion of an unwritten extent to a
//     written one, which both do at I/O completion, before the page
//     leaves writeback) has been handed to the journal: it is in the
//     running transaction or an earlier one.
//   - Every entry that depends on the file is created after the call, so
//     it is in the same transaction or a later one. Journals commit in
//     order, and each commit flushes the device's write cache before its
//     commit record.
//
// Starting the write without waiting for it (SYNC_FILE_RANGE_WRITE alone)
// is not enough on ext4 with data=ordered: since Linux 5.6 it defaults to
// dioread_nolock, which allocates unwritten extents at writeback and
// converts them only when the write completes, in whatever transaction is
// running then; data=ordered does not order such extents' data. An entry
// could commit before the conversion, and the IV file would read back as
// 16 zero bytes: a wrong IV, undetected. (Measured on Linux 6.18: the
// extent was still unwritten when the call returned one time in four.)
//
// Limits: ext4's optional fast_commit (off by default) is safe with the
// copy, because ext4 marks a transaction with an extended attribute
// change ineligible for fast commits, but was not analysed for settle;
// btrfs was not analysed (an fsync there can log an entry without the
// rest of its transaction); network
// and FUSE file systems make no promise of order at all; a crash there
// may lose an IV or side file written a few milliseconds before entries
// that survive, which is what gocryptfs risks everywhere. A device that
// acknowledges cache flushes it did not do defeats every file system's
// journal and this argument with it. `vfsfilter crypt fsck` reports a
// file whose content differs from its copy, and with --repair rewrites
// the content from the copy (FsckOptions).
//
// # Block size
//
// 4 KiB, like gocryptfs: it is the page size, so the kernel's page-sized
// writes (mmap write-back, small random writes) never read-modify-write a
// block, and a damaged block costs one page. Larger blocks would save
// per-block overhead (0.8% of space, a GCM call per 4 KiB), but AES-GCM
// runs at 3 GB/s per core here in 4 KiB blocks and the FUSE round trip
// dominates, so nothing measurable is gained. The block size is a
// settings field (authenticated), so a later tree may choose otherwise.
//
// # Known limits (documented, as gocryptfs documents them)
//
//   - A block whose ciphertext is all zeros reads as zeros (a hole). An
//     attacker with write access to the backing directory can therefore
//     zero whole blocks undetected; every other change is detected.
//   - Names and directory structure sizes are visible (padded to 16
//     bytes), as are file sizes (to the byte) and times.
//   - Trees made before FeatureXattr pass extended attributes through
//     unencrypted, as they always did; nothing converts an old tree (its
//     attributes would have to be rewritten, and init sets the flag only
//     on new trees). In newer trees, only user.* attributes are
//     encrypted: system.* (POSIX ACLs), security.* and trusted.* are read
//     by the kernel or by filters below and stay in the clear.
//   - Of encrypted attributes, the stored names are deterministic (equal
//     names on different files look equal below) and value sizes are
//     visible (plaintext + 32 bytes). A value is bound to its attribute's
//     name, not to its file: moving it to the same attribute of another
//     file, or deleting an attribute, is not detected. Plaintext names
//     are limited to 180 bytes (ERANGE), values to 65504 bytes (E2BIG;
//     the backing file system may allow less: ext4 without ea_inode fits
//     about 4 KiB per inode, ENOSPC).
//   - A file whose every block is rewritten keeps its file id; nonces are
//     random per block (128-bit), so this reuses no nonce.
//   - Two mounts of one backing directory at a time are not supported
//     (as with gocryptfs): each keeps per-file state the other cannot see.
//
// # Damage
//
// A block that fails authentication gives EIO for the requests that
// include it and one log line naming the file and block; other blocks read
// (the kernel retries a failed read-ahead page by page). A damaged header
// gives EIO with a log line. A name that does not decrypt is hidden from
// listings. An extended attribute value that fails authentication gives
// EIO with a log line naming the file and attribute (never the value); a
// stored attribute name that does not decrypt is hidden from listxattr.
// "vfsfilter crypt fsck" reports all of these.
package crypt
