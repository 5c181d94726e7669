#!/usr/bin/env bash
# Benchmarks of the notify machinery (issue 5), run in-process against real
# FUSE mounts (root, /dev/fuse):
#   - latency from a create in the backing dir (by another process) to the
#     event reaching a subscriber: p50/p99 (target p99 < 100 ms);
#   - 20,000 creates/s underneath for 10 s: every event delivered or a
#     rescan event; invalidation and inotify-replay counts;
#   - ls -lR (warm) of a 10k-file tree: native vs 1 s timeouts vs 30 s
#     timeouts (+ cached listings), which the invalidation makes correct.
# Both backing watches (fanotify, inotify) are measured.
set -euo pipefail
cd "$(dirname "$0")/.."
VFS_NOTIFY_BENCH=1 go test ./notify/ -run '^TestBench' -count=1 -v -timeout 10m "$@" | grep -E '^(latency|flood|ls -lR)|FAIL|^ok|^---'
