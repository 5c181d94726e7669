#!/usr/bin/env bash
# Installs what the HSM tests need: versitygw (a real S3 server, pinned),
# built with "go install" into a cache directory and reused when present.
# The tests find it in $VFSFILTER_CI_CACHE/bin or ~/.cache/vfsfilter-ci/bin
# (or at $VERSITYGW, or on PATH). Idempotent.
set -euo pipefail

VERSITYGW_VERSION=v1.8.0
cache="${VFSFILTER_CI_CACHE:-$HOME/.cache/vfsfilter-ci}"
bin="$cache/bin/versitygw"
stamp="$cache/bin/versitygw.version"

if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$VERSITYGW_VERSION" ]; then
	exit 0
fi
mkdir -p "$cache/bin"
GOBIN="$cache/bin" go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
echo "$VERSITYGW_VERSION" >"$stamp"
"$bin" --version >/dev/null
