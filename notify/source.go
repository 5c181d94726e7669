package notify

import (
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vfsfilter/vfsfilter/layer"
)

// AltitudeSource is the Source filter's altitude: just above the
// passthrough (0) and below every filter that translates names or hides
// entries, so that the backing watch's events, published here in backing
// names, pass through all of them on their way up.
const AltitudeSource = 10

// Source is the bottom half of the notifier: a filter that registers no
// callback (it costs no request anything) and owns the watch on the
// backing directory. What the watch finds it publishes with
// Attachment.Publish, so the event travels up through every filter above
// (crypt decrypts names, namespace hides and renames, HSM drops its own
// work) to the notify Filter at the top.
type Source struct {
	n     *Notifier
	att   *layer.Attachment
	mu    sync.Mutex
	w     watcher
	count atomic.Uint64
	last  layer.Event // last event published, to drop exact repeats
}

// watcher is a backing watch (fanotify or inotify).
type watcher interface {
	name() string
	// precise reports whether the watch tells the daemon's own changes
	// apart (fanotify, by pid). An imprecise one reports them too, and
	// the notify filter drops them by what it expects (Notifier.seen).
	precise() bool
	close() error
}

// Name implements layer.Filter.
func (s *Source) Name() string { return "notify-source" }

// Altitude implements layer.Filter.
func (s *Source) Altitude() int { return AltitudeSource }

// Attach implements layer.Filter: it starts the backing watch.
func (s *Source) Attach(a *layer.Attachment) error {
	s.att = a
	if s.n.opts.Backing == "" {
		return nil
	}
	root, err := filepath.EvalSymlinks(s.n.opts.Backing)
	if err != nil {
		return fmt.Errorf("notify: backing dir: %w", err)
	}
	var w watcher
	switch s.n.opts.Watcher {
	case "", "fanotify":
		w, err = startFanotify(root, s.emit, s.n.log)
		if err == nil || s.n.opts.Watcher == "fanotify" {
			break
		}
		s.n.log.Info("fanotify unavailable; watching the backing dir with inotify, which cannot tell who made a change", "error", err)
		fallthrough
	case "inotify":
		w, err = startInotify(root, s.emit, s.n.log)
	default:
		err = fmt.Errorf("unknown watcher %q", s.n.opts.Watcher)
	}
	if err != nil {
		return fmt.Errorf("notify: watch %s: %w", root, err)
	}
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
	return nil
}

// emit publishes one event found underneath, in backing names. It runs on
// the watch's goroutine only.
func (s *Source) emit(ev layer.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	// A burst of writes underneath reads as many identical modify
	// events; one is enough until something else happens.
	if ev.Kind == layer.EventModify && s.last.Kind == ev.Kind && s.last.Path == ev.Path && ev.Time.Sub(s.last.Time) < 50*time.Millisecond {
		return
	}
	s.last = ev
	s.count.Add(1)
	s.att.Publish(ev)
}

func (s *Source) watcherName() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return ""
	}
	return s.w.name()
}

func (s *Source) imprecise() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w != nil && !s.w.precise()
}

func (s *Source) stop() error {
	s.mu.Lock()
	w := s.w
	s.w = nil
	s.mu.Unlock()
	if w == nil {
		return nil
	}
	return w.close()
}

// relPath returns p relative to root ("" for root) and whether p is inside.
func relPath(root, p string) (string, bool) {
	if p == root {
		return "", true
	}
	if len(p) > len(root) && p[:len(root)] == root && p[len(root)] == '/' {
		return p[len(root)+1:], true
	}
	if root == "/" && len(p) > 1 && p[0] == '/' {
		return p[1:], true
	}
	return "", false
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	if name == "" {
		return dir
	}
	return dir + "/" + name
}
