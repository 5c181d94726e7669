package notify

import (
	"strings"
	"time"

	"github.com/vfsfilter/vfsfilter/layer"
)

// WireEvent is an event as `vfsfilter watch --json` prints it and as the
// control method "watch" streams it: one JSON object per event.
type WireEvent struct {
	// Event is create, remove, modify, attrib, rename or rescan.
	Event string `json:"event"`
	// Path is relative to the mountpoint, in the names users see; "" is
	// the mount's root (a rescan of everything).
	Path string `json:"path"`
	// OldPath is a rename's old name.
	OldPath string `json:"old_path,omitempty"`
	// Dir says the entry is a directory.
	Dir bool `json:"dir"`
	// Time is when the daemon learnt of the change (RFC 3339 with
	// nanoseconds).
	Time time.Time `json:"time"`
	// Source is "mount" for changes made through the mount and
	// "backing" for changes found in the backing directory.
	Source string `json:"source,omitempty"`
}

// Wire converts ev.
func Wire(ev layer.Event, source string) WireEvent {
	return WireEvent{Event: ev.Kind.String(), Path: ev.Path, OldPath: ev.OldPath, Dir: ev.Dir, Time: ev.Time, Source: source}
}

// WatchParams are the parameters of the control method "watch".
type WatchParams struct {
	// Path is the subtree to watch, relative to the mountpoint ("" for
	// all of it).
	Path string `json:"path"`
	// NoRecursive limits the events to Path itself and its direct
	// children.
	NoRecursive bool `json:"no_recursive,omitempty"`
}

// Match reports whether an event about path concerns the watch: path is
// the watched path or below it (only its direct children with
// NoRecursive).
func (p WatchParams) Match(path string) bool {
	if p.Path == "" {
		return !p.NoRecursive || !strings.Contains(path, "/")
	}
	if path == p.Path {
		return true
	}
	if !strings.HasPrefix(path, p.Path+"/") {
		return false
	}
	return !p.NoRecursive || !strings.Contains(path[len(p.Path)+1:], "/")
}

// Wants reports whether w should be sent to a watch of p: either name of a
// rename may match, and a rescan matches when it covers the watched path
// (an ancestor, the path itself) or lies inside it.
func (p WatchParams) Wants(w *WireEvent) bool {
	if w.Event == layer.EventRescan.String() {
		return isAncestor(w.Path, p.Path) || p.Match(w.Path)
	}
	return p.Match(w.Path) || (w.OldPath != "" && p.Match(w.OldPath))
}

// isAncestor reports whether a is p or a directory above it ("" is above
// everything).
func isAncestor(a, p string) bool {
	return a == "" || a == p || strings.HasPrefix(p, a+"/")
}
