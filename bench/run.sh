#!/usr/bin/env bash
# bench/run.sh: compare vfsfilter with native ext4 and go-fuse's loopback,
# all measured in one run on the same machine, and report ratios.
#
# See bench/README.md for what each workload does and how to read the table.
set -euo pipefail
export LC_ALL=C

usage() {
	cat <<'EOF'
usage: bench/run.sh [options]

  --quick            1 run per workload instead of 3 (median)
  --runs N           runs per workload (median is reported; default 3)
  --size-mib N       size of the sequential file in MiB (default 512)
  --files N          files in the untar tree and in smallfiles (default 10000)
  --out FILE         also write the markdown report to FILE
  --only LIST        comma-separated configurations and/or workloads to run,
                     e.g. "native,loopback" or "seqwrite,seqread" or both;
                     a workload prefix selects its variants (ls-lR = cold+warm)
  --extra NAME=ARGS  add a vfsfilter configuration (repeatable): ARGS are the
                     vfsfilter arguments before BACKING MOUNTPOINT, split at
                     white space (no quoting), e.g.
                     --extra "long-timeouts=mount --daemon --attr-timeout 30s --entry-timeout 30s"
  --vfsfilter PATH   use this vfsfilter binary instead of building ./cmd/vfsfilter
  --timeout SEC      kill a single benchmark command after SEC seconds (default 900)
  --fs image|dir     image (default, as root): run on a fresh journaled ext4
                     image on a loop device (bench/lib/ext4img.sh says why);
                     dir: on the file system of the work directory ($TMPDIR)
  -h, --help         this text

Configurations: native, loopback, passthrough, hide20, passthrough-cache
(+ --extra). Workloads: seqwrite seqread-cold seqread-warm untar ls-lR-cold
ls-lR-warm rm-rf smallfiles.
EOF
}

die() {
	echo "run.sh: $*" >&2
	exit 2
}
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ---------------------------------------------------------------- options
RUNS=3
SIZE_MIB=512
NFILES=10000
OUT=""
ONLY=""
TIMEOUT=900
VFS_BIN=""
EXTRA_SPECS=()
FS=image

is_pos() { [[ $1 =~ ^[0-9]+$ ]] && ((10#$1 >= 1)); }

while (($#)); do
	case $1 in
	--quick) RUNS=1 ;;
	--runs)
		(($# >= 2)) || die "$1 needs a value"
		RUNS=$2
		shift
		;;
	--size-mib)
		(($# >= 2)) || die "$1 needs a value"
		SIZE_MIB=$2
		shift
		;;
	--files)
		(($# >= 2)) || die "$1 needs a value"
		NFILES=$2
		shift
		;;
	--out)
		(($# >= 2)) || die "$1 needs a value"
		OUT=$2
		shift
		;;
	--only)
		(($# >= 2)) || die "$1 needs a value"
		ONLY=$2
		shift
		;;
	--extra)
		(($# >= 2)) || die "$1 needs a value"
		EXTRA_SPECS+=("$2")
		shift
		;;
	--vfsfilter)
		(($# >= 2)) || die "$1 needs a value"
		VFS_BIN=$2
		shift
		;;
	--timeout)
		(($# >= 2)) || die "$1 needs a value"
		TIMEOUT=$2
		shift
		;;
	--fs)
		(($# >= 2)) || die "$1 needs a value"
		FS=$2
		shift
		;;
	--runs=* | --size-mib=* | --files=* | --out=* | --only=* | --extra=* | --vfsfilter=* | --timeout=* | --fs=*)
		k=${1%%=*}
		v=${1#*=}
		shift
		set -- "$k" "$v" "$@"
		continue
		;;
	-h | --help)
		usage
		exit 0
		;;
	*)
		usage >&2
		die "unknown argument: $1"
		;;
	esac
	shift
done

is_pos "$RUNS" || die "--runs must be a positive integer"
is_pos "$SIZE_MIB" || die "--size-mib must be a positive integer"
is_pos "$NFILES" || die "--files must be a positive integer"
is_pos "$TIMEOUT" || die "--timeout must be a positive integer"
[[ $FS == image || $FS == dir ]] || die "--fs wants image or dir"
RUNS=$((10#$RUNS)) SIZE_MIB=$((10#$SIZE_MIB)) NFILES=$((10#$NFILES)) TIMEOUT=$((10#$TIMEOUT))
[[ -z $VFS_BIN || -x $VFS_BIN ]] || die "--vfsfilter $VFS_BIN is not executable"
if [[ -n $OUT ]]; then
	[[ -d $(dirname -- "$OUT") ]] || die "--out: directory of $OUT does not exist"
	OUT=$(cd "$(dirname -- "$OUT")" && pwd)/$(basename -- "$OUT")
fi

REPO=$(cd "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)

# ---------------------------------------------------------------- configurations
# 20 realistic --hide patterns that match nothing in any workload (checked
# against the tarball's file list below), so hide20 does the same work as
# passthrough plus the cost of evaluating the patterns.
HIDE_PATTERNS=('*.swp' '*.swo' '*~' '.DS_Store' 'Thumbs.db' 'desktop.ini'
	'node_modules' '__pycache__' '*.pyc' '.idea' '.vscode' '*.tmp' '*.bak'
	'.cache' 'build/tmp' 'target/debug' '*.class' '.terraform' 'coverage.out'
	'.#*')

CFG_NAMES=()
declare -A CFG_KIND=() CFG_ARGS=() CFG_NA=() CFG_NOTE=() CFG_DEFAULT=()

add_cfg() { # name kind args default(1/0)
	local n=$1
	[[ $n =~ ^[A-Za-z0-9._-]+$ ]] || die "bad configuration name: '$n'"
	[[ -z ${CFG_KIND[$n]+x} ]] || die "configuration '$n' defined twice"
	CFG_NAMES+=("$n")
	CFG_KIND[$n]=$2
	CFG_ARGS[$n]=$3
	CFG_DEFAULT[$n]=$4
}

hide_args="mount --daemon"
for p in "${HIDE_PATTERNS[@]}"; do hide_args+=" --hide $p"; done
add_cfg native native "" 1
add_cfg loopback loopback "" 1
add_cfg passthrough vfsfilter "mount --daemon" 1
add_cfg hide20 vfsfilter "$hide_args" 1
add_cfg passthrough-cache vfsfilter "mount --daemon --entry-timeout 30s --attr-timeout 30s --cache-dirs -o acl" 0
for spec in "${EXTRA_SPECS[@]}"; do
	[[ $spec == *=* ]] || die "--extra wants NAME=ARGS, got '$spec'"
	add_cfg "${spec%%=*}" vfsfilter "${spec#*=}" 0
done

# ---------------------------------------------------------------- workloads
WORKLOADS=(seqwrite seqread-cold seqread-warm untar ls-lR-cold ls-lR-warm rm-rf smallfiles)
declare -A WL_THROUGHPUT=([seqwrite]=1 [seqread-cold]=1 [seqread-warm]=1)

declare -A SEL_CFG=() SEL_WL=()
if [[ -n $ONLY ]]; then
	any_cfg=0 any_wl=0
	IFS=',' read -r -a only_items <<<"$ONLY"
	for it in "${only_items[@]}"; do
		it=${it// /}
		[[ -n $it ]] || continue
		hit=0
		if [[ -n ${CFG_KIND[$it]+x} ]]; then
			SEL_CFG[$it]=1
			any_cfg=1 hit=1
		fi
		for w in "${WORKLOADS[@]}"; do
			if [[ $w == "$it" || $w == "$it"-* ]]; then
				SEL_WL[$w]=1
				any_wl=1 hit=1
			fi
		done
		((hit)) || die "--only: '$it' is neither a configuration nor a workload"
	done
	((any_cfg)) || for c in "${CFG_NAMES[@]}"; do SEL_CFG[$c]=1; done
	((any_wl)) || for w in "${WORKLOADS[@]}"; do SEL_WL[$w]=1; done
else
	for c in "${CFG_NAMES[@]}"; do SEL_CFG[$c]=1; done
	for w in "${WORKLOADS[@]}"; do SEL_WL[$w]=1; done
fi
sel() { [[ -n ${SEL_WL[$1]+x} ]]; }

IS_ROOT=0
[[ $(id -u) == 0 ]] && IS_ROOT=1

# ---------------------------------------------------------------- work dir + cleanup
W=$(mktemp -d "${TMPDIR:-/tmp}/vfsbench.XXXXXX")
W=$(cd "$W" && pwd -P) # mountinfo shows resolved paths
[[ $W != *[[:space:]]* ]] || {
	rmdir "$W"
	die "work dir path must not contain white space: $W"
}
LOGDIR=$W/logs
mkdir -p "$LOGDIR"
# DATA holds every backing directory (and native's files); $W/fs when the
# ext4 image is mounted (after the traps below are set).
DATA=$W
. "$REPO/bench/lib/ext4img.sh"

MOUNTS=()         # "kind|mountpoint|pid" of every mount this script made
declare -A OWN_PIDS=() # PIDs of background processes this script started
CHILD_PID=""      # the benchmark command running right now

is_mounted() { # exact mount point match in our mount namespace
	awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

mounts_under() { # mount points at or below $1
	awk -v m="$1" '$5 == m || index($5, m "/") == 1 { print $5 }' /proc/self/mountinfo
}

pid_alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }

wait_pid_gone() { # pid seconds
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		pid_alive "$1" || return 0
		sleep 0.1
	done
	return 1
}

# fuse_daemon_pid MOUNTPOINT: the PID that serves this FUSE mount (holds a
# /dev/fuse fd whose fuse_connection equals the mount's device minor), or
# "" if it cannot be found. Used to read its CPU time and, for a daemonized
# vfsfilter that this script started, to stop it if it outlives its unmount.
fuse_daemon_pid() {
	local dev minor f pid
	dev=$(awk -v m="$1" '$5 == m { print $3; exit }' /proc/self/mountinfo)
	[[ -n $dev ]] || return 0
	minor=${dev#*:}
	while IFS= read -r f; do
		pid=${f#/proc/}
		pid=${pid%%/*}
		if grep -qx "fuse_connection:[[:space:]]*$minor" "/proc/$pid/fdinfo/${f##*/}" 2>/dev/null; then
			echo "$pid"
			return 0
		fi
	done < <(find /proc/[0-9]*/fd -lname /dev/fuse 2>/dev/null || true)
	# Older kernels have no fuse_connection in fdinfo: match the command line.
	f=$(grep -lzxF -- "$1" /proc/[0-9]*/cmdline 2>/dev/null | grep -v "^/proc/$$/" | head -n 1 || true)
	[[ -z $f ]] || {
		pid=${f#/proc/}
		echo "${pid%%/*}"
	}
}

cpu_ticks() { # utime+stime of a PID in clock ticks ("" if unknown)
	[[ -n $1 && -r /proc/$1/stat ]] || return 0
	# Fields after the ")" of comm: state is $1, utime $12, stime $13.
	sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }' || true
}

unmount_entry() { # kind mnt pid; never fails
	local kind=$1 mnt=$2 pid=$3 d
	if is_mounted "$mnt"; then
		[[ -n $pid ]] || pid=$(fuse_daemon_pid "$mnt")
		if [[ $kind == vfsfilter && -n $VFS && -x $VFS ]]; then
			timeout -k 5 30 "$VFS" unmount "$mnt" >>"$LOGDIR/unmount.log" 2>&1 || true
		fi
		if is_mounted "$mnt"; then
			if ((IS_ROOT)); then
				timeout -k 5 30 umount "$mnt" >>"$LOGDIR/unmount.log" 2>&1 || true
			else
				for d in fusermount3 fusermount; do
					if command -v "$d" >/dev/null; then
						timeout -k 5 30 "$d" -u "$mnt" >>"$LOGDIR/unmount.log" 2>&1 || true
						break
					fi
				done
			fi
		fi
		if is_mounted "$mnt"; then
			log "WARNING: $mnt is busy, lazy unmount"
			if ((IS_ROOT)); then
				umount -l "$mnt" >>"$LOGDIR/unmount.log" 2>&1 || true
			else
				fusermount3 -uz "$mnt" >>"$LOGDIR/unmount.log" 2>&1 || fusermount -uz "$mnt" >>"$LOGDIR/unmount.log" 2>&1 || true
			fi
		fi
	fi
	# The server should exit by itself once unmounted; stop it otherwise.
	# Only the one process we started (or found serving our own mount).
	if pid_alive "$pid" && ! wait_pid_gone "$pid" 5; then
		log "server $pid for $mnt still running after unmount: SIGTERM"
		kill -TERM "$pid" 2>/dev/null || true
		wait_pid_gone "$pid" 5 || kill -KILL "$pid" 2>/dev/null || true
	fi
	if [[ -n $pid && -n ${OWN_PIDS[$pid]+x} ]]; then
		wait "$pid" 2>/dev/null || true
		unset "OWN_PIDS[$pid]"
	fi
	return 0
}

forget_mount() { # mnt
	local i keep=()
	for i in "${MOUNTS[@]}"; do
		[[ ${i#*|} == "$1|"* ]] || keep+=("$i")
	done
	MOUNTS=("${keep[@]}")
}

CLEANED=0
cleanup() {
	local rc=$? m left p
	set +e
	((CLEANED)) && return
	CLEANED=1
	trap - EXIT INT TERM HUP
	if pid_alive "$CHILD_PID"; then
		kill -TERM "$CHILD_PID" 2>/dev/null
		wait_pid_gone "$CHILD_PID" 5 || kill -KILL "$CHILD_PID" 2>/dev/null
		wait "$CHILD_PID" 2>/dev/null
	fi
	for m in "${MOUNTS[@]}"; do
		IFS='|' read -r k mp pd <<<"$m"
		unmount_entry "$k" "$mp" "$pd"
	done
	MOUNTS=()
	[[ $DATA == "$W" ]] || ext4img_umount "$W/fs" "$W/ext4.img"
	for p in "${!OWN_PIDS[@]}"; do
		if pid_alive "$p"; then
			kill -TERM "$p" 2>/dev/null
			wait_pid_gone "$p" 5 || kill -KILL "$p" 2>/dev/null
		fi
		wait "$p" 2>/dev/null
	done
	left=$(mounts_under "$W")
	if [[ -n $left ]]; then
		log "WARNING: still mounted, NOT removing $W: $left"
	else
		rm -rf "$W"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM
trap 'exit 129' HUP

if [[ $FS == image ]]; then
	if ((IS_ROOT)) && ext4img_mount "$W/ext4.img" "$W/fs" $((SIZE_MIB * 4 + 4096)) 2>>"$LOGDIR/errors.log"; then
		DATA=$W/fs
	else
		log "no ext4 image (see $LOGDIR/errors.log); running on the work dir's file system"
	fi
fi

# run_cmd CMD...: run one benchmark command with a time limit, in the
# background so that a signal interrupts the script at once (the trap then
# stops it by its PID).
run_cmd() {
	timeout -k 10 "$TIMEOUT" "$@" &
	CHILD_PID=$!
	local rc=0
	wait "$CHILD_PID" || rc=$?
	CHILD_PID=""
	return "$rc"
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }

# ---------------------------------------------------------------- build
VFS=""
VFS_NOTE=""
LB=""
SF=""
GOFUSE_VER=$(cd "$REPO" && go list -m -f '{{.Version}}' github.com/hanwen/go-fuse/v2 2>/dev/null || echo v2.12.1)

need_cfg_kind() {
	local c
	for c in "${CFG_NAMES[@]}"; do
		[[ -n ${SEL_CFG[$c]+x} && ${CFG_KIND[$c]} == "$1" ]] && return 0
	done
	return 1
}

if need_cfg_kind loopback; then
	log "building go-fuse $GOFUSE_VER example/loopback"
	if (cd "$REPO" && go build -o "$W/loopback" github.com/hanwen/go-fuse/v2/example/loopback) >"$LOGDIR/build-loopback.log" 2>&1; then
		LB=$W/loopback
	else
		log "building loopback in the main module failed; trying a temporary module"
		if (mkdir -p "$W/lbmod" && cd "$W/lbmod" && export GOWORK=off GOFLAGS=-mod=mod &&
			go mod init lbbench && go get "github.com/hanwen/go-fuse/v2@$GOFUSE_VER" &&
			go build -o "$W/loopback" github.com/hanwen/go-fuse/v2/example/loopback) >>"$LOGDIR/build-loopback.log" 2>&1; then
			LB=$W/loopback
		fi
	fi
	[[ -n $LB ]] || log "cannot build loopback: $(tail -n 3 "$LOGDIR/build-loopback.log" | tr '\n' ' ')"
fi

if need_cfg_kind vfsfilter; then
	if [[ -n $VFS_BIN ]]; then
		VFS=$VFS_BIN
		VFS_NOTE="given with --vfsfilter: $VFS_BIN"
	elif [[ -d $REPO/cmd/vfsfilter ]]; then
		log "building ./cmd/vfsfilter"
		if (cd "$REPO" && go build -o "$W/vfsfilter" ./cmd/vfsfilter) >"$LOGDIR/build-vfsfilter.log" 2>&1; then
			VFS=$W/vfsfilter
			rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "no commit")
			dirty=$(git -C "$REPO" status --porcelain 2>/dev/null | head -c 1 || true)
			VFS_NOTE="built from $REPO ($rev${dirty:+, uncommitted changes})"
		else
			VFS_NOTE="./cmd/vfsfilter does not build: $(grep -v '^#' "$LOGDIR/build-vfsfilter.log" | grep -m 1 . || true)"
			log "$VFS_NOTE"
		fi
	else
		VFS_NOTE="./cmd/vfsfilter does not exist yet"
		log "$VFS_NOTE"
	fi
fi

if sel smallfiles; then
	# Built in a module of its own, so that it builds whatever state the
	# main module is in.
	mkdir -p "$W/sfmod"
	cp "$REPO/bench/smallfiles/main.go" "$W/sfmod/"
	printf 'module smallfiles\n\ngo 1.21\n' >"$W/sfmod/go.mod"
	if (cd "$W/sfmod" && GOWORK=off GOFLAGS='' go build -o "$W/smallfiles" .) >"$LOGDIR/build-smallfiles.log" 2>&1; then
		SF=$W/smallfiles
	else
		log "cannot build bench/smallfiles: $(head -n 3 "$LOGDIR/build-smallfiles.log" | tr '\n' ' ')"
	fi
fi

for c in "${CFG_NAMES[@]}"; do
	[[ -n ${SEL_CFG[$c]+x} ]] || continue
	case ${CFG_KIND[$c]} in
	loopback) [[ -n $LB ]] || CFG_NA[$c]="loopback did not build" ;;
	vfsfilter) [[ -n $VFS ]] || CFG_NA[$c]=$VFS_NOTE ;;
	esac
done

# ---------------------------------------------------------------- tarball
TARBALL=$W/src.tar
TAR_FILES=0
TAR_MB=0
GOROOT_SRC=$(go env GOROOT)/src
if sel untar || sel ls-lR-cold || sel ls-lR-warm || sel rm-rf; then
	log "building the tarball from $GOROOT_SRC"
	# Regular files up to 1 MiB (drops a few large test binaries), sorted,
	# then NFILES of them picked evenly, so that the tree keeps the shape
	# of the whole source tree (all packages, ~8 files per directory).
	(cd "$GOROOT_SRC/.." && find src -type f -size -1025k | sort) >"$W/all-files"
	total=$(wc -l <"$W/all-files")
	if ((NFILES >= total)); then
		cp "$W/all-files" "$W/tar-files"
		((NFILES == total)) || log "only $total files in $GOROOT_SRC; the tree has $total files, not $NFILES"
	else
		awk -v n="$NFILES" -v t="$total" 'int(NR * n / t) != int((NR - 1) * n / t)' "$W/all-files" >"$W/tar-files"
	fi
	TAR_FILES=$(wc -l <"$W/tar-files")
	tar -C "$GOROOT_SRC/.." -cf "$TARBALL" -T "$W/tar-files"
	TAR_MB=$(($(stat -c %s "$TARBALL") / 1000000))
	for p in "${HIDE_PATTERNS[@]}"; do
		m=$(find "$GOROOT_SRC" \( -name "$p" -o -path "*/$p" -o -path "*/$p/*" \) -printf 'src/%P\n' | grep -cFxf - "$W/tar-files" || true)
		((m == 0)) || log "WARNING: hide pattern '$p' matches $m files of the tarball"
	done
fi

# ---------------------------------------------------------------- results
declare -A SAMPLES=() FAILS=()
declare -A CPU_TICKS=() CPU_BYTES=()
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

rec() { SAMPLES["$1|$2"]+="$3 "; }
recfail() {
	FAILS["$1|$2"]=$((${FAILS["$1|$2"]:-0} + 1))
	log "  $1 $2: FAILED${3:+ ($3)}"
}
# value of one timing as reported: MB/s for throughput workloads, s otherwise
sample() { # cfg wl seconds [bytes]
	local v
	if [[ -n ${WL_THROUGHPUT[$2]+x} ]]; then
		v=$(awk -v b="$4" -v s="$3" 'BEGIN { printf "%.1f", (s > 0 ? b / s / 1e6 : 0) }')
		log "  $1 $2: $3 s = $v MB/s"
	else
		v=$3
		log "  $1 $2: $3 s"
	fi
	rec "$1" "$2" "$v"
}

# ---------------------------------------------------------------- mount/unmount
MNT_ERR=""
mount_cfg() { # cfg backing mnt -> MOUNT_PID (may be ""), MNT_ERR
	local c=$1 b=$2 m=$3 pid i args=() lf
	MOUNT_PID=""
	MNT_ERR=""
	lf=$LOGDIR/mount-$c.log
	case ${CFG_KIND[$c]} in
	native) return 0 ;;
	loopback)
		args=(-q)
		((IS_ROOT)) && args+=(-directmount) # works without fusermount
		"$LB" "${args[@]}" "$m" "$b" >>"$lf" 2>&1 &
		pid=$!
		OWN_PIDS[$pid]=1
		MOUNTS+=("loopback|$m|$pid")
		for ((i = 0; i < 100; i++)); do
			is_mounted "$m" && break
			pid_alive "$pid" || break
			sleep 0.1
		done
		if ! is_mounted "$m"; then
			MNT_ERR="loopback did not mount: $(grep -m 1 . "$lf" || echo "no output")"
			unmount_entry loopback "$m" "$pid"
			forget_mount "$m"
			return 1
		fi
		MOUNT_PID=$pid
		;;
	vfsfilter)
		read -r -a args <<<"${CFG_ARGS[$c]}"
		MOUNTS+=("vfsfilter|$m|")
		echo "+ vfsfilter ${args[*]} $b $m" >>"$lf"
		if ! timeout -k 5 60 "$VFS" "${args[@]}" "$b" "$m" >>"$lf" 2>&1; then
			MNT_ERR="'vfsfilter ${CFG_ARGS[$c]}' failed: $(grep -v '^+ ' "$lf" | grep -m 1 . || echo "no output")"
		fi
		if [[ -z $MNT_ERR ]]; then
			for ((i = 0; i < 100; i++)); do
				is_mounted "$m" && break
				sleep 0.1
			done
			is_mounted "$m" || MNT_ERR="'vfsfilter ${CFG_ARGS[$c]}' exited 0 but $m is not mounted after 10 s"
		fi
		if [[ -n $MNT_ERR ]]; then
			unmount_entry vfsfilter "$m" ""
			forget_mount "$m"
			return 1
		fi
		MOUNT_PID=$(fuse_daemon_pid "$m")
		forget_mount "$m"
		MOUNTS+=("vfsfilter|$m|$MOUNT_PID")
		;;
	esac
	return 0
}

umount_cfg() { # cfg mnt pid
	[[ ${CFG_KIND[$1]} == native ]] && return 0
	unmount_entry "${CFG_KIND[$1]}" "$2" "$3"
	forget_mount "$2"
}

# ---------------------------------------------------------------- one round
sync_fs() { # the FUSE mount (writes back anything cached there) and the backing ext4
	local m=$1
	[[ $m == "$W" || $m == "$W"/* ]] || return 1
	run_cmd sync -f "$m" || true
	run_cmd sync -f "$W"
}
drop_caches() {
	sync_fs "$1" && echo 3 >/proc/sys/vm/drop_caches
}

alive() { # cfg mnt
	[[ ${CFG_KIND[$1]} == native ]] || is_mounted "$2"
}

run_round() { # cfg round
	local c=$1 r=$2 base b m pid t0 t1 s rc cpu0 cpu1 bytes=0 size_b have_big=0 have_tree=0
	base=$DATA/r$r-$c
	b=$base/backing
	mkdir -p "$b"
	if [[ ${CFG_KIND[$c]} == native ]]; then
		m=$b
	else
		m=$base/mnt
		mkdir -p "$m"
	fi
	log "round $r/$RUNS: $c"
	if ! mount_cfg "$c" "$b" "$m"; then
		log "  $c: $MNT_ERR"
		if ((r == 1)); then
			CFG_NA[$c]=$MNT_ERR
		else
			CFG_NOTE[$c]+="round $r: $MNT_ERR. "
		fi
		rm -rf "$base"
		return 0
	fi
	pid=$MOUNT_PID
	size_b=$((SIZE_MIB * 1048576))

	# --- sequential I/O
	cpu0=$(cpu_ticks "$pid")
	if sel seqwrite || sel seqread-cold || sel seqread-warm; then
		sync_fs "$m" || true
		t0=$(now)
		if run_cmd dd if=/dev/zero of="$m/big" bs=1M count="$SIZE_MIB" conv=fsync status=none 2>>"$LOGDIR/errors.log"; then
			t1=$(now)
			have_big=1
			if sel seqwrite; then
				sample "$c" seqwrite "$(elapsed "$t0" "$t1")" "$size_b"
				bytes=$((bytes + size_b))
			fi
		else
			recfail "$c" seqwrite "dd write"
		fi
	fi
	if ((have_big)) && sel seqread-cold; then
		if ((IS_ROOT)); then
			if drop_caches "$m"; then
				t0=$(now)
				if run_cmd dd if="$m/big" of=/dev/null bs=1M status=none 2>>"$LOGDIR/errors.log"; then
					t1=$(now)
					sample "$c" seqread-cold "$(elapsed "$t0" "$t1")" "$size_b"
					bytes=$((bytes + size_b))
				else
					recfail "$c" seqread-cold "dd read"
				fi
			else
				recfail "$c" seqread-cold "sync/drop_caches"
			fi
		fi
	elif sel seqread-cold; then
		recfail "$c" seqread-cold "no file"
	fi
	if ((have_big)) && sel seqread-warm; then
		if ! { ((IS_ROOT)) && sel seqread-cold; }; then
			# the cold read did not run: read once so that this one is warm
			run_cmd dd if="$m/big" of=/dev/null bs=1M status=none 2>>"$LOGDIR/errors.log" || true
		fi
		t0=$(now)
		if run_cmd dd if="$m/big" of=/dev/null bs=1M status=none 2>>"$LOGDIR/errors.log"; then
			t1=$(now)
			sample "$c" seqread-warm "$(elapsed "$t0" "$t1")" "$size_b"
			bytes=$((bytes + size_b))
		else
			recfail "$c" seqread-warm "dd read"
		fi
	elif sel seqread-warm; then
		recfail "$c" seqread-warm "no file"
	fi
	cpu1=$(cpu_ticks "$pid")
	if [[ -n $cpu0 && -n $cpu1 ]] && ((bytes > 0)); then
		CPU_TICKS[$c]=$((${CPU_TICKS[$c]:-0} + cpu1 - cpu0))
		CPU_BYTES[$c]=$((${CPU_BYTES[$c]:-0} + bytes))
	fi
	if ((have_big)); then
		run_cmd rm -f "$m/big" || true
	fi

	# --- source tree: untar, ls -lR (cold, then warm), rm -rf
	if ! alive "$c" "$m"; then
		sel untar && recfail "$c" untar "mount gone"
	elif sel untar || sel ls-lR-cold || sel ls-lR-warm || sel rm-rf; then
		run_cmd cat "$TARBALL" >/dev/null || true # tarball (on native ext4) in page cache
		sync_fs "$m" || true
		rc=0
		t0=$(now)
		{ run_cmd mkdir "$m/tree" && run_cmd tar -xf "$TARBALL" -C "$m/tree" && sync_fs "$m"; } 2>>"$LOGDIR/errors.log" || rc=$?
		t1=$(now)
		if ((rc == 0)); then
			have_tree=1
			sel untar && sample "$c" untar "$(elapsed "$t0" "$t1")"
		else
			recfail "$c" untar "tar rc=$rc"
		fi
	fi
	if ((have_tree)) && sel ls-lR-cold; then
		if ((IS_ROOT)); then
			if drop_caches "$m"; then
				t0=$(now)
				if run_cmd ls -lR "$m/tree" >/dev/null 2>>"$LOGDIR/errors.log"; then
					t1=$(now)
					sample "$c" ls-lR-cold "$(elapsed "$t0" "$t1")"
				else
					recfail "$c" ls-lR-cold "ls"
				fi
			else
				recfail "$c" ls-lR-cold "sync/drop_caches"
			fi
		fi
	fi
	if ((have_tree)) && sel ls-lR-warm; then
		# "Warm" = the second ls -lR in a row, as a user sees it.
		if ! { ((IS_ROOT)) && sel ls-lR-cold; }; then
			run_cmd ls -lR "$m/tree" >/dev/null 2>&1 || true
		fi
		t0=$(now)
		if run_cmd ls -lR "$m/tree" >/dev/null 2>>"$LOGDIR/errors.log"; then
			t1=$(now)
			sample "$c" ls-lR-warm "$(elapsed "$t0" "$t1")"
		else
			recfail "$c" ls-lR-warm "ls"
		fi
	fi
	if ((have_tree)); then
		sync_fs "$m" || true
		rc=0
		t0=$(now)
		run_cmd rm -rf "$m/tree" 2>>"$LOGDIR/errors.log" || rc=$?
		t1=$(now)
		sync_fs "$m" || true
		if ((rc == 0)); then
			sel rm-rf && sample "$c" rm-rf "$(elapsed "$t0" "$t1")"
		else
			recfail "$c" rm-rf "rc=$rc"
		fi
	fi
	if ((!have_tree)); then
		for s in ls-lR-cold ls-lR-warm rm-rf; do
			[[ $s == ls-lR-cold ]] && ((!IS_ROOT)) && continue
			if sel "$s"; then recfail "$c" "$s" "no tree"; fi
		done
	fi

	# --- small files
	if sel smallfiles; then
		if [[ -z $SF ]]; then
			recfail "$c" smallfiles "helper not built"
		elif alive "$c" "$m"; then
			sync_fs "$m" || true
			rc=0
			t0=$(now)
			run_cmd "$SF" -n "$NFILES" -size 4096 "$m/small" 2>>"$LOGDIR/errors.log" || rc=$?
			t1=$(now)
			sync_fs "$m" || true
			if ((rc == 0)); then
				sample "$c" smallfiles "$(elapsed "$t0" "$t1")"
			else
				recfail "$c" smallfiles "rc=$rc"
			fi
			run_cmd rm -rf "$m/small" || true
		else
			recfail "$c" smallfiles "mount gone"
		fi
	fi

	if ! alive "$c" "$m"; then
		CFG_NOTE[$c]+="round $r: the mount disappeared during the run. "
		log "  $c: WARNING: the mount disappeared"
	fi
	umount_cfg "$c" "$m" "$pid"
	if is_mounted "$m"; then
		CFG_NOTE[$c]+="round $r: could not unmount $m. "
	else
		rm -rf "$base"
	fi
}

# ---------------------------------------------------------------- main loop
RUN_CFGS=()
for c in "${CFG_NAMES[@]}"; do
	[[ -n ${SEL_CFG[$c]+x} ]] && RUN_CFGS+=("$c")
done
START=$(date -u '+%Y-%m-%d %H:%M:%S UTC')
log "work dir $W; configurations: ${RUN_CFGS[*]}; $RUNS run(s)"
for ((r = 1; r <= RUNS; r++)); do
	# Interleave configurations and rotate their order every round, so slow
	# drifts of a noisy machine spread over all of them.
	n=${#RUN_CFGS[@]}
	for ((i = 0; i < n; i++)); do
		c=${RUN_CFGS[$(((i + r - 1) % n))]}
		[[ -z ${CFG_NA[$c]+x} ]] || continue
		run_round "$c" "$r"
	done
done

# ---------------------------------------------------------------- report
median() { # values...
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR == 0) exit 1
		if (NR % 2) printf "%.6f", v[(NR + 1) / 2]; else printf "%.6f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A MED=()
for c in "${RUN_CFGS[@]}"; do
	for w in "${WORKLOADS[@]}"; do
		sel "$w" || continue
		read -r -a vals <<<"${SAMPLES["$c|$w"]:-}"
		if ((${#vals[@]})); then MED["$c|$w"]=$(median "${vals[@]}"); fi
	done
done

fmt_val() { # wl value
	if [[ -n ${WL_THROUGHPUT[$1]+x} ]]; then
		awk -v v="$2" 'BEGIN { printf "%.0f", v }'
	else
		awk -v v="$2" 'BEGIN { printf (v < 10 ? "%.3f" : "%.2f"), v }'
	fi
}

# ratio wl x ref: speed of x relative to ref (>1 = x faster), "" if unknown
ratio() {
	local a=${MED["$2|$1"]:-} b=${MED["$3|$1"]:-}
	[[ -n $a && -n $b ]] || return 0
	if [[ -n ${WL_THROUGHPUT[$1]+x} ]]; then
		awk -v x="$a" -v r="$b" 'BEGIN { if (r > 0) printf "%.2f", x / r }'
	else
		awk -v x="$a" -v r="$b" 'BEGIN { if (x > 0) printf "%.2f", r / x }'
	fi
}

RATIOS=() # "x/ref"
have() { [[ -n ${SEL_CFG[$1]+x} ]]; }
have loopback && have native && RATIOS+=("loopback/native")
have passthrough && have native && RATIOS+=("passthrough/native")
have passthrough && have loopback && RATIOS+=("passthrough/loopback")
have hide20 && have passthrough && RATIOS+=("hide20/passthrough")
for c in "${RUN_CFGS[@]}"; do
	((CFG_DEFAULT[$c])) && continue
	have native && RATIOS+=("$c/native")
	have passthrough && RATIOS+=("$c/passthrough")
done

passthrough_verdict() { # cfg
	local c=$1 t=${CPU_TICKS[$1]:-} by=${CPU_BYTES[$1]:-}
	if [[ -z $t || -z $by ]]; then
		echo "unknown (server CPU time not measured)"
		return
	fi
	awk -v t="$t" -v hz="$CLK_TCK" -v b="$by" 'BEGIN {
		s = t / hz; g = b / 1073741824
		v = (s <= 0.02 + 0.1 * g) ? "likely ACTIVE" : (s >= 0.25 * g ? "likely NOT active" : "unclear")
		printf "%s (FUSE server used %.2f s CPU for %.2f GiB of sequential I/O)", v, s, g }'
}

kernel_passthrough="kernel config not readable"
pick_cfg='/^CONFIG_FUSE_PASSTHROUGH=/ { print; f = 1 } END { if (!f) print "CONFIG_FUSE_PASSTHROUGH not set" }'
if [[ -r /proc/config.gz ]]; then
	kernel_passthrough=$(zcat /proc/config.gz 2>/dev/null | awk "$pick_cfg" || true)
elif [[ -r /boot/config-$(uname -r) ]]; then
	kernel_passthrough=$(awk "$pick_cfg" "/boot/config-$(uname -r)" || true)
fi

REPORT=$W/report.md
{
	echo "# vfsfilter benchmark"
	echo
	echo "- date: $START (finished $(date -u '+%H:%M:%S UTC'))"
	echo "- kernel: $(uname -srm); $kernel_passthrough"
	echo "- machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo); data on $(if [[ $DATA == "$W" ]]; then echo "the work dir $W: $(findmnt -n -o FSTYPE -T "$W" 2>/dev/null || stat -f -c %T "$W") ($(df -P "$W" | awk 'NR == 2 { print $1 }'))"; else echo "a fresh journaled ext4 image on a loop device (direct I/O)"; fi)"
	if ((RUNS > 1)); then
		echo "- runs: $RUNS per workload, median reported; configurations interleaved and their order rotated each round"
	else
		echo "- runs: 1 per workload (no median: single samples are noisy)"
	fi
	echo "- sizes: seq file $SIZE_MIB MiB; smallfiles $NFILES x 4 KiB; untar tree $TAR_FILES files, $TAR_MB MB (from $GOROOT_SRC)"
	echo "- FUSE passthrough (guessed from the FUSE server's CPU time during seq I/O; with passthrough the kernel does the I/O itself):"
	for c in "${RUN_CFGS[@]}"; do
		[[ ${CFG_KIND[$c]} == native ]] && continue
		[[ -z ${CFG_NA[$c]+x} ]] || continue
		echo "  - $c: $(passthrough_verdict "$c")"
	done
	echo "- configurations:"
	for c in "${RUN_CFGS[@]}"; do
		case ${CFG_KIND[$c]} in
		native) d="ext4 directly" ;;
		loopback)
			d="go-fuse $GOFUSE_VER example/loopback"
			if ((IS_ROOT)); then d+=" -directmount"; fi
			d+=" (entry/attr timeout 1 s)"
			;;
		vfsfilter)
			if [[ $c == hide20 ]]; then
				d="vfsfilter mount --daemon + 20 non-matching --hide patterns (${HIDE_PATTERNS[*]})"
			else
				d="vfsfilter ${CFG_ARGS[$c]}"
			fi
			;;
		esac
		na=${CFG_NA[$c]:-}
		echo "  - $c: $d${na:+ — **n/a: $na**}${CFG_NOTE[$c]:+ — note: ${CFG_NOTE[$c]}}"
	done
	[[ -z $VFS_NOTE ]] || echo "- vfsfilter binary: $VFS_NOTE"
	((IS_ROOT)) || echo "- not root: cold measurements (drop_caches) skipped"
	echo
	echo "Figures: MB/s (10^6 bytes/s) for seq*, seconds for the rest. Ratios are speed relative"
	echo "to the reference (X/ref; >1 means X is faster): time_ref/time_X for timed workloads,"
	echo "MB/s_X/MB/s_ref for throughput. untar includes a final sync; rm-rf and smallfiles do not."
	echo
	hdr="| workload |"
	sep="|---|"
	for c in "${RUN_CFGS[@]}"; do
		hdr+=" $c |"
		sep+="---:|"
	done
	for x in "${RATIOS[@]}"; do
		hdr+=" $x |"
		sep+="---:|"
	done
	echo "$hdr"
	echo "$sep"
	for w in "${WORKLOADS[@]}"; do
		sel "$w" || continue
		if [[ -n ${WL_THROUGHPUT[$w]+x} ]]; then u="MB/s"; else u="s"; fi
		row="| $w ($u) |"
		for c in "${RUN_CFGS[@]}"; do
			v=${MED["$c|$w"]:-}
			if [[ -n $v ]]; then
				row+=" $(fmt_val "$w" "$v") |"
			elif [[ ($w == seqread-cold || $w == ls-lR-cold) ]] && ((!IS_ROOT)); then
				row+=" skipped |"
			else
				row+=" n/a |"
			fi
		done
		for x in "${RATIOS[@]}"; do
			v=$(ratio "$w" "${x%/*}" "${x#*/}")
			row+=" ${v:-n/a} |"
		done
		echo "$row"
	done

	# Targets (see bench/README.md).
	echo
	echo "## Targets"
	echo
	echo "| target | workload | ratio | threshold | result |"
	echo "|---|---|---:|---:|---|"
	target() { # x ref wl threshold text
		local v res
		sel "$3" && have "$1" && have "$2" || return 0
		v=$(ratio "$3" "$1" "$2")
		if [[ -z $v ]]; then
			res="n/a"
		elif awk -v v="$v" -v t="$4" 'BEGIN { exit !(v >= t) }'; then
			res="PASS"
		else
			res="**FAIL**"
		fi
		echo "| $5 | $3 | ${v:-n/a} | ≥ $4 | $res |"
	}
	for w in seqwrite seqread-cold seqread-warm; do
		target passthrough native "$w" 0.95 "passthrough/native ≥ 0.95x throughput"
	done
	for w in untar rm-rf smallfiles; do
		target passthrough loopback "$w" 0.87 "passthrough time ≤ 1.15x loopback"
	done
	target passthrough native ls-lR-warm 0.33 "passthrough ls -lR (warm) ≤ 3x native time"
	target passthrough native ls-lR-cold 0.33 "(info) passthrough ls -lR (cold) ≤ 3x native time"
	for w in "${WORKLOADS[@]}"; do
		target hide20 passthrough "$w" 0.91 "hide20 within 10% of passthrough"
	done

	echo
	echo "## Raw samples"
	echo
	echo "In run order; MB/s or s as above. spread = (max - min) / median: differences between"
	echo "configurations smaller than the spread are noise."
	echo
	for w in "${WORKLOADS[@]}"; do
		sel "$w" || continue
		line="- $w:"
		for c in "${RUN_CFGS[@]}"; do
			s=${SAMPLES["$c|$w"]:-}
			f=${FAILS["$c|$w"]:-}
			[[ -n $s || -n $f ]] || continue
			read -r -a vals <<<"$s"
			sp=""
			((${#vals[@]} > 1)) && sp=" spread $(printf '%s\n' "${vals[@]}" | sort -g | awk '{ v[NR] = $1 } END {
				m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
				if (m > 0) printf "%.0f%%", (v[NR] - v[1]) / m * 100 }')"
			line+=" $c [${s% }]$sp${f:+ ($f failed)};"
		done
		[[ $line == *"]"* || $line == *failed* ]] || line+=" (none)"
		echo "${line%;}"
	done
} >"$REPORT"

cat "$REPORT"
if [[ -n $OUT ]]; then
	cp "$REPORT" "$OUT"
	log "report written to $OUT"
fi
