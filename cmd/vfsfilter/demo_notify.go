package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/notify"
)

// notifyDemo is the notify machinery's part of the demo: its two filters
// (notify at the top of the stack, its event source just above the
// passthrough), and a step that shows what "vfsfilter watch" reports. It
// also lends the other parts a watch (demo.watch), to check what their
// filters' own work shows watchers.
func notifyDemo() *demoPart {
	nd := &notifyDemoState{}
	return &demoPart{
		name:     "notify",
		describe: nd.describe,
		filters:  nd.filters,
		serve:    nd.serve,
		steps: []demoStep{
			{"watching changes made through the mount and underneath", nd.stepWatch},
		},
	}
}

type notifyDemoState struct {
	n *notify.Notifier
}

func (nd *notifyDemoState) describe(d *demo) error {
	d.printf("notify: reports every change, made through the mount or directly in the\nbacking directory, in the names users see (what \"vfsfilter watch\" prints).\n")
	return nil
}

func (nd *notifyDemoState) filters(d *demo) ([]layer.Filter, error) {
	n, err := notify.New(notify.Options{
		Backing: d.backing,
		Watcher: os.Getenv(notifyWatcherEnv),
		Log:     d.log,
	})
	if err != nil {
		return nil, err
	}
	nd.n = n
	d.watch = func() *demoWatch { return &demoWatch{sub: n.Subscribe(), watcher: n.Watcher()} }
	return []layer.Filter{n.Filter(), n.Source()}, nil
}

func (nd *notifyDemoState) serve(d *demo, srv *layer.Server) error {
	return nd.n.Serve(srv)
}

func (nd *notifyDemoState) stepWatch(d *demo) error {
	w := d.watch()
	defer w.close()
	d.printf("A watch of the whole mount starts (as \"vfsfilter watch %s\" would). Then:\n", d.mnt)
	notes := filepath.Join(d.mnt, "notes.txt")
	d.printf("$ echo 'written through the mount' > %s\n", notes)
	if err := os.WriteFile(notes, []byte("written through the mount\n"), 0o644); err != nil {
		return err
	}
	log, err := d.backingPath("build/output.log")
	if err != nil {
		return err
	}
	cache, err := d.backingPath("cache.tmp")
	if err != nil {
		return err
	}
	if d.has("crypt") {
		d.printf("Another program, working directly in the backing directory, deletes\nbuild/output.log and the hidden cache.tmp: by their encrypted names, all it\ncan see there:\n")
	} else {
		d.printf("Another program, working directly in the backing directory, deletes\nbuild/output.log and the hidden cache.tmp:\n")
	}
	if err := d.underneath(`rm "$1" "$2"`, log, cache); err != nil {
		return err
	}
	want := []string{
		"create notes.txt (mount)",
		"modify notes.txt (mount)",
		"remove build/output.log (backing)",
	}
	got, err := w.collect(len(want))
	d.printf("The watch reports, in the names users see (time, event, path; after \"#\",\nwhere the change was made, which --json gives as \"source\"):\n")
	d.printEvents(got)
	if err != nil {
		return err
	}
	if d.has("crypt") {
		d.printf("The backing watch (%s) saw encrypted names; crypt decrypted them and\nnamespace dropped cache.tmp, which is hidden: removing it was not reported.\n", nd.n.Watcher())
	} else {
		d.printf("cache.tmp is hidden: removing it was not reported. The backing watch used\n%s.\n", nd.n.Watcher())
	}
	return checkEvents(got, want)
}

// demoWatch is a subscription to the mount's events, for steps to check
// what watchers see.
type demoWatch struct {
	sub     *notify.Subscription
	watcher string // the backing watch's mechanism: fanotify or inotify
}

// demoQuiet is how long a watch keeps listening once it has what it
// waited for, to catch events that should not come.
const demoQuiet = 300 * time.Millisecond

// collect returns the events that arrive until n have (waiting at most
// 5s), and any that arrive in the demoQuiet after them. Rescans do not
// count (see printEvents).
func (w *demoWatch) collect(n int) ([]notify.WireEvent, error) {
	var evs []notify.WireEvent
	got := 0
	deadline := time.Now().Add(5 * time.Second)
	for {
		wait := time.Until(deadline)
		if got >= n {
			wait = demoQuiet
		}
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		ev, source, err := w.sub.Next(ctx)
		cancel()
		if err != nil {
			if got >= n {
				return evs, nil
			}
			return evs, fmt.Errorf("got %d events after 5s, want %d", got, n)
		}
		if ev.Kind != layer.EventRescan {
			got++
		}
		evs = append(evs, notify.Wire(ev, source))
	}
}

func (w *demoWatch) close() { w.sub.Close() }

// printEvents prints events as "vfsfilter watch" does, with their source.
// Rescans are counted, not listed: fanotify watches the whole file system
// the backing directory is on, and a directory elsewhere on it that came
// and went before the watch could resolve it may have been inside the
// backing directory, so the watch asks its readers to look again. On a
// busy machine there are a few; they do not stand for lost events here.
func (d *demo) printEvents(evs []notify.WireEvent) {
	rescans := 0
	for _, ev := range evs {
		if ev.Event == layer.EventRescan.String() {
			rescans++
			continue
		}
		d.printf("    %-60s # %s\n", strings.TrimSuffix(formatEvent(&ev), "\n"), ev.Source)
	}
	if rescans > 0 {
		d.printf("    (and %d rescan events: changes elsewhere on the file system that the\n    backing watch could not place; a watcher would read the tree again)\n", rescans)
	} else if len(evs) == 0 {
		d.printf("    (no events)\n")
	}
}

// checkEvents compares events other than rescans with want, each
// "KIND PATH (SOURCE)".
func checkEvents(got []notify.WireEvent, want []string) error {
	var g []string
	for _, ev := range got {
		if ev.Event == layer.EventRescan.String() {
			continue
		}
		s := ev.Event + " " + ev.Path
		if ev.OldPath != "" {
			s = ev.Event + " " + ev.OldPath + " -> " + ev.Path
		}
		g = append(g, s+" ("+ev.Source+")")
	}
	if strings.Join(g, "\n") != strings.Join(want, "\n") {
		return fmt.Errorf("the watch reported\n    %s\nwant\n    %s", strings.Join(g, "\n    "), strings.Join(want, "\n    "))
	}
	return nil
}
