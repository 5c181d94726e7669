# bench/lib/ext4img.sh: a fresh, journaled ext4 file system for benchmarks,
# sourced by bench/run.sh and bench/crypt.sh.
#
# Why: "native ext4" should be the ext4 users have: with a journal, freshly
# made. The root file system of a CI machine or VM may be something else
# (here: ext4 mounted without a journal, where inode allocation skips every
# inode freed in the last ~30 s, so an untar right after an rm -rf of
# thousands of files costs several times more, and the order in which
# configurations run decides the result). A fresh image on a loop device
# (direct I/O, so the host's page cache does not hold the image twice)
# gives every configuration the same file system, whatever the host has.
#
# ext4img_mount IMAGE MOUNTPOINT SIZE_MIB: make the image (sparse), format
# it and mount it; sets EXT4IMG_DEV. Returns non-zero (with a message) when
# something is missing; callers then fall back to their work directory.
# ext4img_umount MOUNTPOINT IMAGE: unmount, detach and remove the image.
ext4img_mount() {
	local img=$1 mnt=$2 size=$3
	EXT4IMG_DEV=""
	if ! command -v mkfs.ext4 >/dev/null || ! command -v losetup >/dev/null; then
		echo "ext4img: mkfs.ext4 or losetup missing (e2fsprogs, util-linux)" >&2
		return 1
	fi
	[ "$(id -u)" -eq 0 ] || { echo "ext4img: needs root" >&2; return 1; }
	rm -f "$img"
	truncate -s "${size}M" "$img" || return 1
	# lazy_itable_init=0: no background inode-table zeroing during the runs.
	mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img" || return 1
	EXT4IMG_DEV=$(losetup --direct-io=on -f --show "$img" 2>/dev/null || losetup -f --show "$img") || return 1
	mkdir -p "$mnt"
	if ! mount -t ext4 "$EXT4IMG_DEV" "$mnt"; then
		losetup -d "$EXT4IMG_DEV"
		EXT4IMG_DEV=""
		return 1
	fi
}

ext4img_umount() {
	local mnt=$1 img=$2
	if mountpoint -q "$mnt" 2>/dev/null; then
		umount "$mnt" 2>/dev/null || umount -l "$mnt"
	fi
	if [ -n "${EXT4IMG_DEV:-}" ]; then
		losetup -d "$EXT4IMG_DEV" 2>/dev/null || true
		EXT4IMG_DEV=""
	fi
	rm -f "$img"
}
