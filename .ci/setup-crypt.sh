#!/usr/bin/env bash
# Installs what bench/crypt.sh compares against: gocryptfs from Debian.
# Idempotent. Call from .ci/setup.sh:  bash "$(dirname "$0")/setup-crypt.sh"
set -euo pipefail
if command -v gocryptfs >/dev/null 2>&1; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "setup-crypt: gocryptfs is missing; run as root or install it" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends gocryptfs >/dev/null
