package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/vfsfilter/vfsfilter/layer"
	"github.com/vfsfilter/vfsfilter/notify"
)

// notifyWatcherEnv forces the backing watch's mechanism ("fanotify" or
// "inotify"); tests use it to run the inotify fallback.
const notifyWatcherEnv = "VFSFILTER_NOTIFY_WATCHER"

// The notify machinery is part of every mount: two filters (notify at the
// top, its event source just above the passthrough), the control method
// "watch", and, once the mount serves, cache invalidation and the inotify
// replay for changes made underneath. The two builders run one after the
// other for one mount; the first leaves the notifier for the second.
func init() {
	pending := map[*stackContext]*notify.Notifier{}
	registerFilter(func(sc *stackContext) (layer.Filter, error) {
		if sc.NoNotify {
			return nil, nil
		}
		n, err := notify.New(notify.Options{
			Backing: sc.Backing,
			Watcher: os.Getenv(notifyWatcherEnv),
			Log:     sc.Log,
		})
		if err != nil {
			return nil, err
		}
		pending[sc] = n
		sc.watcher = n.Watcher
		sc.onBlind = n.OnBlind
		if sc.Control != nil {
			sc.Control.Handle("watch", watchMethod(n))
		}
		sc.OnServe(func(srv *layer.Server) {
			if err := n.Serve(srv); err != nil && sc.Log != nil {
				sc.Log.Warn("notify: changes made underneath will not invalidate the kernel's caches", "error", err)
			}
		})
		sc.OnClose(n.Close)
		return n.Filter(), nil
	})
	registerFilter(func(sc *stackContext) (layer.Filter, error) {
		if sc.NoNotify {
			return nil, nil
		}
		n := pending[sc]
		delete(pending, sc)
		if n == nil {
			return nil, fmt.Errorf("notify: source built without its filter")
		}
		return n.Source(), nil
	})
}

// watchMethod serves the control method "watch": params are
// notify.WatchParams; every event under the watched path is streamed as a
// notify.WireEvent until the client goes away.
func watchMethod(n *notify.Notifier) func(ctx context.Context, params json.RawMessage, send func(v any) error) error {
	return func(ctx context.Context, params json.RawMessage, send func(v any) error) error {
		var p notify.WatchParams
		if len(params) > 0 {
			if err := json.Unmarshal(params, &p); err != nil {
				return fmt.Errorf("watch: bad parameters: %w", err)
			}
		}
		sub := n.Subscribe()
		defer sub.Close()
		for {
			ev, source, err := sub.Next(ctx)
			if err != nil {
				// The client went away: the normal end of a watch.
				return nil
			}
			w := notify.Wire(ev, source)
			if !p.Wants(&w) {
				continue
			}
			if err := send(w); err != nil {
				return nil
			}
		}
	}
}
