package notify

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vfsfilter/vfsfilter/layer"
)

// hub fans events out to any number of subscribers (watch clients). It is
// called from request handlers (events of changes through the mount) and
// from the backing watch, so publishing never blocks: each subscriber has a
// bounded queue, and a subscriber that falls behind loses events and gets a
// rescan of the root in their place, after the last event it did get.
type hub struct {
	mu   sync.RWMutex
	subs map[*subscriber]struct{}
}

type subscriber struct {
	ch   chan sourced
	lost atomic.Bool
}

// sourced is an event with where it was found ("mount" or "backing").
type sourced struct {
	layer.Event
	source string
}

func newHub() *hub { return &hub{subs: map[*subscriber]struct{}{}} }

func (h *hub) publish(ev layer.Event, source string) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for s := range h.subs {
		select {
		case s.ch <- sourced{ev, source}:
		default:
			s.lost.Store(true)
		}
	}
}

// Subscription is one subscriber's queue of events. It is registered
// when created: no event published after Notifier.Subscribe returns is
// missed (or, when the queue overflowed, a rescan stands in for it).
type Subscription struct {
	h       *hub
	s       *subscriber
	pending *sourced // the event that came after a loss, due next
}

func (h *hub) subscribe(buf int) *Subscription {
	s := &subscriber{ch: make(chan sourced, buf)}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return &Subscription{h: h, s: s}
}

// Next returns the next event and where it was found: "mount" (a change
// made through the mount), "backing" (found underneath) or "watch" (a
// rescan of the root standing for events this subscription lost because
// it was read too slowly). It blocks until there is one or ctx ends.
func (sub *Subscription) Next(ctx context.Context) (layer.Event, string, error) {
	if ev := sub.pending; ev != nil {
		sub.pending = nil
		return ev.Event, ev.source, nil
	}
	select {
	case <-ctx.Done():
		return layer.Event{}, "", ctx.Err()
	case ev := <-sub.s.ch:
		if sub.s.lost.Swap(false) {
			// Report the loss first (it happened before ev was
			// received), then ev on the next call.
			sub.pending = &ev
			return layer.Event{Kind: layer.EventRescan, Time: time.Now()}, "watch", nil
		}
		return ev.Event, ev.source, nil
	}
}

// Close ends the subscription.
func (sub *Subscription) Close() {
	sub.h.mu.Lock()
	delete(sub.h.subs, sub.s)
	sub.h.mu.Unlock()
}
