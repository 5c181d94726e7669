package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/vfsfilter/vfsfilter/internal/control"
	"github.com/vfsfilter/vfsfilter/notify"
)

var cmdWatch = &command{
	name:  "watch",
	usage: "watch [flags] PATH",
	short: "print changes under PATH in a live mount, as users see them",
	long: `Print one line per change under PATH, which must be inside a live vfsfilter
mount, until interrupted (SIGINT or SIGTERM end it with exit status 0).

Changes made through the mount and changes made directly in the backing
directory by other programs are both reported, in the names users see:
hidden entries never appear, renamed entries appear under their visible
names, and a rename is one event with both names. Writes are reported as one
"modify" when the file is closed (at most one per second while it is written).

Events: create, remove, modify, attrib, rename, rescan. A "rescan" names a
directory ("" or "." for the whole mount) in which changes may have been
missed (the daemon's queue overflowed, or a change could not be placed):
whoever keeps a picture of the tree must read that directory again.

Without --json a line is
  TIME EVENT PATH            (PATH ends in "/" for a directory)
  TIME rename OLD -> NEW
With --json it is one object per line:
  {"event":"rename","path":"b","old_path":"a","dir":false,
   "time":"2025-01-02T03:04:05.123456789Z","source":"backing"}
where source is "mount" (made through the mount), "backing" (made
underneath) or "watch" (a rescan because this watch read too slowly).`,
	setup: func(fs *pflag.FlagSet) func(*env, []string) error {
		asJSON := fs.Bool("json", false, "print one JSON object per event")
		noRec := fs.Bool("no-recursive", false, "report only PATH itself and its direct children")
		return func(e *env, args []string) error {
			if len(args) != 1 {
				return usageErrorf("watch needs 1 argument, PATH; got %d", len(args))
			}
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return watchCommand(ctx, e.stdout, args[0], *asJSON, *noRec)
		}
	},
}

func init() { registerCommand(cmdWatch) }

func watchCommand(ctx context.Context, out io.Writer, path string, asJSON, noRec bool) error {
	mnt, rel, err := control.FindMount(path)
	if err != nil {
		return errorf(ExitMountpoint, "%v", err)
	}
	c, err := control.Dial(control.SocketPath(mnt))
	if err != nil {
		return errorf(ExitMountpoint, "%s: %v", mnt, err)
	}
	params := notify.WatchParams{Path: rel, NoRecursive: noRec}
	err = c.Call(ctx, "watch", params, func(data json.RawMessage) error {
		if asJSON {
			_, err := fmt.Fprintf(out, "%s\n", data)
			return err
		}
		var w notify.WireEvent
		if err := json.Unmarshal(data, &w); err != nil {
			return err
		}
		_, err := io.WriteString(out, formatEvent(&w))
		return err
	})
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("watch %s: %w", path, err)
	}
	// The daemon ended the watch: the mount is going away.
	fmt.Fprintln(os.Stderr, "vfsfilter: watch: the mount's daemon ended the watch (unmounted?)")
	return nil
}

// formatEvent is the text form of one event: time, kind, path(s).
func formatEvent(w *notify.WireEvent) string {
	name := func(p string, dir bool) string {
		if p == "" {
			p = "."
		}
		if dir && p != "." {
			p += "/"
		}
		return p
	}
	ts := w.Time.Format(time.RFC3339Nano)
	if w.Event == "rename" {
		return fmt.Sprintf("%s %s %s -> %s\n", ts, w.Event, name(w.OldPath, w.Dir), name(w.Path, w.Dir))
	}
	return fmt.Sprintf("%s %s %s\n", ts, w.Event, name(w.Path, w.Dir))
}
