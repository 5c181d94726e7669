#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build, test and benchmark
# vfsfilter. Idempotent: it installs only what is missing.
set -euo pipefail

need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
command -v tar >/dev/null 2>&1 || need+=(tar)
# chattr and lsattr, for the scripted test of inode flags.
command -v chattr >/dev/null 2>&1 || need+=(e2fsprogs)
# Public file-system exercisers the integration tests run on the mount.
command -v stress-ng >/dev/null 2>&1 || need+=(stress-ng)
command -v fio >/dev/null 2>&1 || need+=(fio)
# A system python (not a user's, which other users cannot run) for one
# scenario that makes an O_TMPFILE file as another user.
[ -x /usr/bin/python3 ] || need+=(python3-minimal)

if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: missing ${need[*]}; run as root or install them" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -e /dev/fuse ]; then
	echo "setup: /dev/fuse is missing (load the fuse module: modprobe fuse)" >&2
	exit 1
fi
# Each filter's own needs (kept beside the filter that needs them).
here=$(dirname "$0")
for part in "$here"/setup-*.sh; do
	if [ -e "$part" ]; then
		bash "$part"
	fi
done
go mod download
