package statuspage

import (
	"sync"

	"github.com/deployer/deployer/releases"
)

// ledgerCache keeps each app's ledger as last read, so that a live stream
// looking at the workers every few seconds does not read history.jsonl
// each time. An app's entry is good until Notify says its ledger changed
// (every write goes through the daemon, which tells the page), or until
// forget: after a handover, another daemon may have written it.
type ledgerCache struct {
	src Source

	mu     sync.Mutex
	gen    map[string]uint64 // by app: bumped by every change
	epoch  uint64            // bumped by forget
	events map[string]ledgerEntry
}

type ledgerEntry struct {
	gen, epoch uint64
	events     []releases.Event // shared by every reader: read-only
}

func newLedgerCache(src Source) *ledgerCache {
	return &ledgerCache{src: src, gen: map[string]uint64{}, events: map[string]ledgerEntry{}}
}

// get is app's ledger, oldest first. A read that a change overtook is
// returned but not kept.
func (c *ledgerCache) get(app string) ([]releases.Event, error) {
	c.mu.Lock()
	gen, epoch := c.gen[app], c.epoch
	if e, ok := c.events[app]; ok && e.gen == gen && e.epoch == epoch {
		c.mu.Unlock()
		return e.events, nil
	}
	c.mu.Unlock()
	events, err := c.src.History(app)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.gen[app] == gen && c.epoch == epoch {
		c.events[app] = ledgerEntry{gen: gen, epoch: epoch, events: events}
	}
	c.mu.Unlock()
	return events, nil
}

// changed says app's ledger was written.
func (c *ledgerCache) changed(app string) {
	c.mu.Lock()
	c.gen[app]++
	c.mu.Unlock()
}

// forget drops every ledger kept.
func (c *ledgerCache) forget() {
	c.mu.Lock()
	c.epoch++
	c.events = map[string]ledgerEntry{}
	c.mu.Unlock()
}
