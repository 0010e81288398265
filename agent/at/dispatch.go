package at

import (
	"log/slog"

	"sync"
)

// maxQueuedURCs bounds the URCs waiting for slow handlers; beyond it the
// oldest are dropped (and logged), so a stuck handler cannot exhaust memory.
const maxQueuedURCs = 1024

type handlerEntry struct {
	prefix string
	h      Handler
}

// dispatcher delivers URCs to handlers, in order, from one goroutine.
type dispatcher struct {
	log *slog.Logger

	mu       sync.Mutex
	prefixes []string
	handlers []handlerEntry
	queue    []string
	dropped  int
	stopping bool

	wake chan struct{}
}

func newDispatcher(log *slog.Logger, prefixes []string, handlers []handlerEntry) *dispatcher {
	return &dispatcher{
		log:      log,
		prefixes: append([]string(nil), prefixes...),
		handlers: append([]handlerEntry(nil), handlers...),
		wake:     make(chan struct{}, 1),
	}
}

func (d *dispatcher) add(prefix string, h Handler) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.handlers = append(d.handlers, handlerEntry{prefix, h})
}

// isURC reports whether line starts with a configured prefix or a non-empty
// handler prefix.
func (d *dispatcher) isURC(line string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.prefixes {
		if p != "" && hasPrefixFold(line, p) {
			return true
		}
	}
	for _, he := range d.handlers {
		if he.prefix != "" && hasPrefixFold(line, he.prefix) {
			return true
		}
	}
	return false
}

func (d *dispatcher) push(line string) {
	d.mu.Lock()
	if len(d.queue) >= maxQueuedURCs {
		d.queue = d.queue[1:]
		d.dropped++
	}
	d.queue = append(d.queue, line)
	d.mu.Unlock()
	d.signal()
}

// stop makes run return once the queue is empty.
func (d *dispatcher) stop() {
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	d.signal()
}

func (d *dispatcher) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *dispatcher) run() {
	for {
		d.mu.Lock()
		batch, dropped, stopping := d.queue, d.dropped, d.stopping
		d.queue, d.dropped = nil, 0
		d.mu.Unlock()
		if dropped > 0 {
			d.log.Warn("at: URC queue full, dropped oldest", "dropped", dropped)
		}
		for _, line := range batch {
			d.deliver(line)
		}
		if len(batch) > 0 {
			continue
		}
		if stopping {
			return
		}
		<-d.wake
	}
}

func (d *dispatcher) deliver(line string) {
	d.mu.Lock()
	var hs []Handler
	for _, he := range d.handlers {
		if hasPrefixFold(line, he.prefix) {
			hs = append(hs, he.h)
		}
	}
	d.mu.Unlock()
	if len(hs) == 0 {
		d.log.Debug("at: URC without handler", "line", line)
		return
	}
	for _, h := range hs {
		h(line)
	}
}
