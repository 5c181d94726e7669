#!/usr/bin/env bash
# bench/crypt.sh: vfsfilter's crypt filter against gocryptfs (Debian's),
# both measured in one run on the same machine and file system; prints a
# markdown table of throughputs/times and the ratio vfsfilter/gocryptfs
# (higher is better for vfsfilter).
#
#   bench/crypt.sh [--size-mib N] [--runs N] [--out FILE]
#
# Needs root (mounts, drop_caches) and gocryptfs (.ci/setup-crypt.sh).
# Workloads: sequential write of SIZE MiB (dd bs=1M, fsync), sequential
# read cold (after remount and drop_caches) and warm (second read of the
# same open-close cycle, page cache kept where the file system allows),
# untar of a source tree, ls -lR (after remount), rm -rf of the tree.
set -euo pipefail
export LC_ALL=C

size=512
runs=3
out=""
while [ $# -gt 0 ]; do
	case "$1" in
	--size-mib) size=$2; shift 2 ;;
	--runs) runs=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	-h|--help) sed -n '2,13p' "$0"; exit 0 ;;
	*) echo "crypt.sh: unknown argument $1" >&2; exit 2 ;;
	esac
done
command -v gocryptfs >/dev/null || { echo "crypt.sh: gocryptfs missing; run .ci/setup-crypt.sh" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "crypt.sh: needs root" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /var/tmp/vfsfilter-cryptbench.XXXXXX)
pids=()
cleanup() {
	for m in "$work"/mnt-*; do
		mountpoint -q "$m" 2>/dev/null && umount -l "$m" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

log "building"
(cd "$repo" && go build -o "$work/vfsfilter" ./cmd/vfsfilter && go build -o "$work/cryptmount" ./bench/cryptmount)
printf 'bench passphrase\n' >"$work/pass"
chmod 600 "$work/pass"

# A source tree to untar: Go's own sources (several thousand small files).
goroot=$(go env GOROOT)
tar -C "$goroot/src" -cf "$work/tree.tar" net crypto go
nfiles=$(tar -tf "$work/tree.tar" | wc -l)
dd if=/dev/urandom of="$work/big.src" bs=1M count="$size" status=none

mkdir -p "$work/back-vfs" "$work/back-gcf" "$work/mnt-vfs" "$work/mnt-gcf"
"$work/vfsfilter" init --crypt --passfile "$work/pass" "$work/back-vfs" >/dev/null
gocryptfs -q -init -passfile "$work/pass" "$work/back-gcf" >/dev/null

mount_fs() {
	case $1 in
	vfs)
		if "$work/vfsfilter" mount --help 2>/dev/null | grep -q -- --passfile; then
			"$work/vfsfilter" mount --daemon --passfile "$work/pass" "$work/back-vfs" "$work/mnt-vfs"
		else
			"$work/cryptmount" "$work/pass" "$work/back-vfs" "$work/mnt-vfs" &
			pids+=($!)
			for _ in $(seq 100); do mountpoint -q "$work/mnt-vfs" && break; sleep 0.05; done
		fi
		;;
	gcf) gocryptfs -q -passfile "$work/pass" "$work/back-gcf" "$work/mnt-gcf" ;;
	esac
	mountpoint -q "$work/mnt-$1" || { echo "crypt.sh: mount $1 failed" >&2; exit 1; }
}
umount_fs() {
	umount "$work/mnt-$1"
	for _ in $(seq 100); do mountpoint -q "$work/mnt-$1" || break; sleep 0.05; done
	sleep 0.2
}
drop() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
now() { date +%s.%N; }
# t CMD...: seconds CMD takes.
t() { local s; s=$(now); "$@" >/dev/null 2>&1; awk -v a="$s" -v b="$(now)" 'BEGIN{printf "%.4f", b-a}'; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

declare -A res
run_one() { # fs
	local fs=$1 m="$work/mnt-$1"
	mount_fs "$fs"
	rm -rf "$m/big" "$m/tree"
	drop
	res[$fs,seqwrite]+=" $(t dd if="$work/big.src" of="$m/big" bs=1M conv=fsync)"
	umount_fs "$fs"; drop; mount_fs "$fs"
	res[$fs,seqread-cold]+=" $(t dd if="$m/big" of=/dev/null bs=1M)"
	res[$fs,seqread-warm]+=" $(t dd if="$m/big" of=/dev/null bs=1M)"
	res[$fs,untar]+=" $(t sh -c "mkdir '$m/tree' && tar -C '$m/tree' -xf '$work/tree.tar' && sync")"
	umount_fs "$fs"; drop; mount_fs "$fs"
	res[$fs,ls-lR]+=" $(t ls -lR "$m/tree")"
	res[$fs,rm-rf]+=" $(t rm -rf "$m/tree" "$m/big")"
	umount_fs "$fs"
}

# Warm the source file so the write measures the file system, not the disk.
cat "$work/big.src" >/dev/null
for r in $(seq "$runs"); do
	for fs in gcf vfs; do
		log "run $r: $fs"
		run_one "$fs"
	done
done

report() {
	echo "crypt benchmark: vfsfilter crypt vs $(gocryptfs -version | head -1 | cut -d';' -f1), $size MiB file, untar of $nfiles entries, median of $runs; $(nproc) cores, kernel $(uname -r)"
	echo
	echo "| workload | gocryptfs | vfsfilter | ratio (vfsfilter/gocryptfs, >1 is better) |"
	echo "| --- | --- | --- | --- |"
	for w in seqwrite seqread-cold seqread-warm untar ls-lR rm-rf; do
		g=$(echo "${res[gcf,$w]}" | median)
		v=$(echo "${res[vfs,$w]}" | median)
		case $w in
		seq*) awk -v g="$g" -v v="$v" -v s="$size" -v w="$w" 'BEGIN{printf "| %s | %.0f MB/s | %.0f MB/s | %.2fx |\n", w, s*1.048576/g, s*1.048576/v, g/v}' ;;
		*) awk -v g="$g" -v v="$v" -v w="$w" 'BEGIN{printf "| %s | %.2f s | %.2f s | %.2fx |\n", w, g, v, g/v}' ;;
		esac
	done
}
report | tee ${out:+"$out"}
