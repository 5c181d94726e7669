#!/usr/bin/env bash
# Usage: fuse-watchdog.sh DIR ROOTPID
#
# Ends a hang that no timeout can end: a test binary that serves FUSE
# mounts itself (go-fuse in the test process) and exits, after go test's
# -timeout panic say, with files still open on one of those mounts. Closing
# the files during the exit sends FLUSH to the process's own connection,
# which nobody reads any more, and the kernel waits for that answer
# whatever the signals (FLUSH is a forced request). The process never
# finishes its exit, go test waits for it and never prints the panic's
# goroutine dump, and CI hangs without a word. SIGKILL does not help;
# aborting the connection does.
#
# Every WATCHDOG_INTERVAL seconds (default 10) the watchdog looks at the
# descendants of ROOTPID for one that is exiting (PF_EXITING) and was
# asleep in its exit at the last check too. For such a process it aborts
# the FUSE connections of the vfsfilter mounts under DIR, the test run's
# own temporary directory, as that process's mount namespace sees them:
# the pending requests fail and the exit completes. No mount outside DIR is
# touched. Other test binaries' mounts under DIR fail too, but by then the
# run has failed already; what matters is that it ends and says why.
set -u
dir=${1:?usage: fuse-watchdog.sh DIR ROOTPID}
root=${2:?usage: fuse-watchdog.sh DIR ROOTPID}
interval=${WATCHDOG_INTERVAL:-10}
dir=$(realpath -e "$dir") || exit 1

# stuck_exiting prints "PID TID" for each descendant PID of ROOTPID with a
# thread TID that is exiting (PF_EXITING) and asleep. (The stuck thread is
# the last one of its process, in interruptible sleep as the kernel shows
# it; the thread group leader is a zombie by then.)
stuck_exiting() {
	grep -H '' /proc/[0-9]*/task/[0-9]*/stat 2>/dev/null | awk -v root="$root" '
	{
		split($0, path, "/") # "", "proc", PID, "task", TID, "stat:..."
		pid = path[3] + 0
		tid = path[5] + 0
		# comm may hold spaces and parentheses: fields count from the last ")".
		for (i = length($0); i > 0 && substr($0, i, 1) != ")"; i--) ;
		split(substr($0, i + 2), f, " ")
		ppid[pid] = f[2] + 0
		if ((f[1] == "S" || f[1] == "D") && int(f[7] / 4) % 2 == 1) stuck[pid] = tid
	}
	END {
		for (p in stuck)
			for (a = ppid[p]; a > 1; a = ppid[a]) if (a == root) { print p, stuck[p]; break }
	}'
}

# abort_under PID TID aborts the connections of the vfsfilter mounts under
# dir in the mount namespace of PID's thread TID (the zombie leader's own
# mountinfo is gone).
abort_under() {
	local info=/proc/$1/task/$2/mountinfo conns
	[ -n "$(cat "$info" 2>/dev/null)" ] || info=/proc/self/mountinfo
	# mountinfo: field 3 is MAJOR:MINOR (a FUSE connection is named by its
	# minor), field 5 the mount point with \040-style escapes, and the file
	# system type follows the " - " separator.
	conns=$(awk -v dir="$dir/" '{
		for (i = 7; i <= NF && $i != "-"; i++) ;
		if ($(i + 1) != "fuse.vfsfilter") next
		mp = $5
		while (match(mp, /\\[0-7][0-7][0-7]/)) {
			c = substr(mp, RSTART + 1, 3)
			mp = substr(mp, 1, RSTART - 1) sprintf("%c", (substr(c,1,1)*64) + (substr(c,2,1)*8) + substr(c,3,1)) substr(mp, RSTART + 4)
		}
		if (index(mp "/", dir) == 1) { split($3, d, ":"); print d[2], mp }
	}' "$info" 2>/dev/null | sort -u)
	[ -n "$conns" ] || return 0
	while read -r conn mp; do
		echo "fuse-watchdog: test process $1 is stuck exiting on its own FUSE mount; aborting connection $conn ($mp)" >&2
		abort_conn "$conn" || echo "fuse-watchdog: could not abort connection $conn" >&2
	done <<<"$conns"
}

# abort_conn CONN aborts FUSE connection CONN through fusectl. fusectl is
# mounted at boot on most systems (systemd), but not on every machine
# (containers, minimal VMs): there it is mounted where it belongs in a
# mount namespace of the command's own, which ends with it, so nothing is
# left mounted whatever happens (fusectl is one instance: every mount of it
# shows all connections).
abort_conn() {
	local ctl=/sys/fs/fuse/connections
	if [ "$(stat -f -c %t "$ctl" 2>/dev/null)" = 65735543 ]; then
		echo 1 >"$ctl/$1/abort"
	else
		unshare -m --propagation private sh -c 'mount -t fusectl fusectl "$1" && echo 1 >"$1/$2/abort"' sh "$ctl" "$1"
	fi
}

# Ended by a signal, take the pending sleep along.
sleeper=
trap '[ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null; exit 0' TERM INT
declare -A seen=()
while kill -0 "$root" 2>/dev/null; do
	declare -A now=()
	while read -r pid tid; do
		now[$pid]=1
		if [ -n "${seen[$pid]:-}" ]; then
			abort_under "$pid" "$tid"
		fi
	done < <(stuck_exiting)
	seen=()
	for pid in "${!now[@]}"; do seen[$pid]=1; done
	unset now
	sleep "$interval" &
	sleeper=$!
	wait "$sleeper"
done
