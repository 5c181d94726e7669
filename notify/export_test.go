package notify

import "github.com/vfsfilter/vfsfilter/layer"

// SetBeforeReplay makes the replay thread call f before it re-enacts each
// event, so that a test can act on the mount between an event's
// invalidation and its replay. Call it before Serve.
func (n *Notifier) SetBeforeReplay(f func(layer.Event)) { n.beforeReplay = f }
