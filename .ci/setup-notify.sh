#!/usr/bin/env bash
# Installs what the notify tests and benchmark need beyond .ci/setup.sh:
# inotifywait (inotify-tools), to check that plain inotify watchers of a
# mount see changes made underneath. Idempotent.
set -euo pipefail
if ! command -v inotifywait >/dev/null 2>&1; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup-notify: inotifywait missing; run as root or install inotify-tools" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends inotify-tools >/dev/null
fi
