package sipws

import (
	"errors"
	"sync"
	"sync/atomic"
)

// partialBytesReason is the close reason of a connection closed by the
// budget of partial messages.
const partialBytesReason = "server out of memory for partial messages"

// errPartialBudget: the budget of partial messages refused a buffer to grow.
var errPartialBudget = errors.New("sipws: over Config.MaxPartialBytes")

// partialBudget bounds the bytes that all connections together hold in
// messages they are still receiving (Config.MaxPartialBytes): the buffer of
// a message whose bytes are still on their way, counted when it grows, and
// given back when the message is delivered or the connection ends. A
// message read whole from bytes already in the read buffer is never
// counted.
//
// When a buffer would grow past the budget, the connections holding the
// most are doomed, largest first, until the growth fits: each doomed
// connection is closed with 1009 by its own goroutine, woken at once, and
// its bytes are freed as it ends. The growing connection is doomed itself,
// instead, as soon as it would hold at least as much as every connection
// left. So the largest holders go and the others, however many, keep
// receiving: the server may hold up to the budget plus what the doomed
// connections hold until they are gone, a short while.
//
// Only connections that hold bytes are tracked, in a heap on the bytes they
// hold: a growth costs O(log holders), under one lock.
type partialBudget struct {
	max   int64
	gauge *atomic.Int64 // Stats.PartialBytes

	mu      sync.Mutex
	total   int64   // bytes charged
	doomed  int64   // of which by doomed connections
	holders []*Conn // the others that hold bytes: a max-heap on held
	held    []int64 // held[i] is what holders[i] holds
}

func (b *partialBudget) init(max int64, gauge *atomic.Int64) {
	b.max, b.gauge = max, gauge
}

// charge lets c, which holds held bytes, hold want (> held) instead. It
// reports false when c is doomed, now or before; then c must close itself
// (readError does).
func (b *partialBudget) charge(c *Conn, held, want int64) bool {
	d := want - held
	var victims []*Conn
	b.mu.Lock()
	if c.doomed.Load() {
		b.mu.Unlock()
		return false
	}
	for b.total-b.doomed+d > b.max {
		if len(b.holders) == 0 || b.holders[0] == c || b.held[0] <= want {
			// c would hold the most: c goes.
			if c.hidx != 0 {
				b.remove(int(c.hidx) - 1)
			}
			b.doomed += held
			c.doomed.Store(true)
			b.mu.Unlock()
			wake(victims)
			return false
		}
		v := b.holders[0]
		b.doomed += b.held[0]
		b.remove(0)
		v.doomed.Store(true)
		victims = append(victims, v)
	}
	b.total += d
	b.gauge.Store(b.total)
	if c.hidx == 0 {
		b.holders = append(b.holders, c)
		b.held = append(b.held, want)
		c.hidx = int32(len(b.holders))
		b.up(len(b.holders) - 1)
	} else {
		i := int(c.hidx) - 1
		b.held[i] = want
		b.up(i)
	}
	b.mu.Unlock()
	wake(victims)
	return true
}

// release gives back the held bytes of c's message, delivered or dropped.
func (b *partialBudget) release(c *Conn, held int) {
	b.mu.Lock()
	b.total -= int64(held)
	b.gauge.Store(b.total)
	if c.doomed.Load() {
		b.doomed -= int64(held)
	} else if c.hidx != 0 {
		b.remove(int(c.hidx) - 1)
	}
	b.mu.Unlock()
}

// wake makes doomed connections see it at once: their reads fail with a
// deadline that has passed, and readError closes them with 1009.
// setReadDeadline re-checks Conn.doomed, so a deadline that the read
// goroutine sets meanwhile does not undo this.
func wake(victims []*Conn) {
	for _, v := range victims {
		_ = v.nc.SetReadDeadline(longAgo)
	}
}

// remove takes holders[i] out of the heap. b.mu is held.
func (b *partialBudget) remove(i int) {
	last := len(b.holders) - 1
	if i != last {
		b.swap(i, last)
	}
	b.holders[last].hidx = 0
	b.holders[last] = nil
	b.holders, b.held = b.holders[:last], b.held[:last]
	if i != last {
		b.down(i)
		b.up(i)
	}
}

func (b *partialBudget) swap(i, j int) {
	b.holders[i], b.holders[j] = b.holders[j], b.holders[i]
	b.held[i], b.held[j] = b.held[j], b.held[i]
	b.holders[i].hidx = int32(i + 1)
	b.holders[j].hidx = int32(j + 1)
}

func (b *partialBudget) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if b.held[p] >= b.held[i] {
			return
		}
		b.swap(i, p)
		i = p
	}
}

func (b *partialBudget) down(i int) {
	for {
		l := 2*i + 1
		if l >= len(b.holders) {
			return
		}
		m := l
		if r := l + 1; r < len(b.holders) && b.held[r] > b.held[l] {
			m = r
		}
		if b.held[i] >= b.held[m] {
			return
		}
		b.swap(i, m)
		i = m
	}
}
