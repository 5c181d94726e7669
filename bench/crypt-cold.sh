#!/usr/bin/env bash
# bench/crypt-cold.sh: the cold sequential read alone, fast enough (about a
# minute) to try a change of crypt's read path against the current code.
# Reads one file through native ext4, gocryptfs and each vfsfilter binary
# given (crypt mounts), round by round in a rotating order, and prints each
# run's throughput and the CPU time the whole machine spent on it (every
# process and the kernel, from /proc/stat): on two cores both file systems
# are bound by CPU here, and a busy host shows as runs that cost more CPU
# for the same work (ext4's included).
#
#   bench/crypt-cold.sh [--rounds N] [--size-mib N] [--evict drop|file] [BIN...]
#
# BIN defaults to a build of ./cmd/vfsfilter. --evict says how a run starts
# cold: "drop" (the default, as bench/crypt.sh does) empties every cache of
# the machine (drop_caches); "file" evicts only the files read (the
# ciphertext below and, by the remount, the mount's own cache), which
# leaves the rest of the machine as it was. Needs root and gocryptfs
# (.ci/setup-crypt.sh).
set -euo pipefail
export LC_ALL=C

rounds=8
size=512
evict=drop
while [ $# -gt 0 ]; do
	case "$1" in
	--rounds) rounds=$2; shift 2 ;;
	--size-mib) size=$2; shift 2 ;;
	--evict) evict=$2; shift 2 ;;
	-h|--help) sed -n '2,/^set -euo/{/^set -euo/d;p}' "$0"; exit 0 ;;
	-*) echo "crypt-cold.sh: unknown argument $1" >&2; exit 2 ;;
	*) break ;;
	esac
done
case $evict in drop|file) ;; *) echo "crypt-cold.sh: --evict wants drop or file" >&2; exit 2 ;; esac
command -v gocryptfs >/dev/null || { echo "crypt-cold.sh: gocryptfs missing; run .ci/setup-crypt.sh" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "crypt-cold.sh: needs root" >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
. "$repo/bench/lib/ext4img.sh"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/vfsfilter-coldbench.XXXXXX")
cleanup() {
	for m in "$work"/mnt-*; do
		mountpoint -q "$m" 2>/dev/null && { umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
	done
	ext4img_umount "$work/fs" "$work/ext4.img"
	rm -rf "$work"
}
trap cleanup EXIT

bins=("$@")
if [ ${#bins[@]} -eq 0 ]; then
	(cd "$repo" && go build -o "$work/vfsfilter" ./cmd/vfsfilter)
	bins=("$work/vfsfilter")
fi
ext4img_mount "$work/ext4.img" "$work/fs" $((size * (2 + ${#bins[@]}) * 11 / 10 + 512))
d=$work/fs
printf 'bench passphrase\n' >"$work/pass"
chmod 600 "$work/pass"
mkdir -p "$d/nat" "$d/gcf" "$work/mnt-gcf"
gocryptfs -q -init -passfile "$work/pass" "$d/gcf" >/dev/null 2>&1
for i in "${!bins[@]}"; do
	mkdir -p "$d/v$i" "$work/mnt-v$i"
	"${bins[$i]}" init --crypt --passfile "$work/pass" "$d/v$i" >/dev/null
done
mnt() {
	case $1 in
	nat) ;;
	gcf) gocryptfs -q -passfile "$work/pass" "$d/gcf" "$work/mnt-gcf" >/dev/null 2>&1 ;;
	v*) "${bins[${1#v}]}" mount --daemon --passfile "$work/pass" "$d/$1" "$work/mnt-$1" ;;
	esac
}
umnt() {
	[ "$1" = nat ] && return
	umount "$work/mnt-$1"
	for _ in $(seq 100); do mountpoint -q "$work/mnt-$1" || break; sleep 0.05; done
}
file() { if [ "$1" = nat ]; then echo "$d/nat/big"; else echo "$work/mnt-$1/big"; fi; }
cold() {
	sync
	if [ $evict = drop ]; then
		echo 3 >/proc/sys/vm/drop_caches
	else
		# dd's documented way to drop the cache of a whole file.
		find "$d/$1" -type f -exec dd if={} iflag=nocache count=0 status=none \;
	fi
}
cpu() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
now() { date +%s.%N; }

cfgs=(nat gcf)
for i in "${!bins[@]}"; do cfgs+=("v$i"); done
head -c $((size << 20)) /dev/urandom >"$work/src"
for c in "${cfgs[@]}"; do
	mnt "$c"
	dd if="$work/src" of="$(file "$c")" bs=1M conv=fsync status=none
	umnt "$c"
done
rm "$work/src"
sync

echo "cold read of $size MiB, $rounds rounds, evict=$evict; nat = ext4, gcf = $(gocryptfs -version | head -1 | cut -d';' -f1)"
for i in "${!bins[@]}"; do echo "v$i = ${bins[$i]}"; done
echo "per run: MB/s / CPU-seconds of the whole machine"
declare -A mbs cpus
n=${#cfgs[@]}
# Round 0 warms up and is not counted: the first read after the set-up
# ran 1.5-2x slower than later ones for every configuration here, ext4
# included (probably, on this VM whose freed memory goes back to the host,
# by being the first to touch memory again).
for r in $(seq 0 "$rounds"); do
	line="round $r:"
	for k in $(seq 0 $((n - 1))); do
		c=${cfgs[$(((k + r) % n))]}
		mnt "$c"
		cold "$c"
		c0=$(cpu); s=$(now)
		dd if="$(file "$c")" of=/dev/null bs=1M status=none
		e=$(now); c1=$(cpu)
		umnt "$c"
		read -r m u < <(awk -v sz="$size" -v s="$s" -v e="$e" -v a="$c0" -v b="$c1" -v hz="$(getconf CLK_TCK)" \
			'BEGIN{printf "%.0f %.2f\n", sz * 1.048576 / (e - s), (b - a) / hz}')
		mbs[$c,$r]=$m; cpus[$c,$r]=$u
		line+=" $c=$m/$u"
	done
	if [ "$r" = 0 ]; then echo "$line (warm-up, not counted)"; else echo "$line"; fi
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo
echo "| config | MB/s (median) | CPU-s (median) | vs gocryptfs, per-round median | rounds at 1.5x |"
echo "| --- | ---: | ---: | ---: | ---: |"
for c in "${cfgs[@]}"; do
	m=""; u=""; q=""; hits=0
	for r in $(seq "$rounds"); do
		m+=" ${mbs[$c,$r]}"; u+=" ${cpus[$c,$r]}"
		x=$(awk -v a="${mbs[$c,$r]}" -v b="${mbs[gcf,$r]}" 'BEGIN{printf "%.3f", a / b}')
		q+=" $x"
		awk -v x="$x" 'BEGIN{exit !(x >= 1.5)}' && hits=$((hits + 1))
	done
	echo "| $c | $(echo "$m" | median) | $(echo "$u" | median) | $(echo "$q" | median)x | $hits/$rounds |"
done
