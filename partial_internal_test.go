package sipws

import (
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
)

// TestPartialBudgetModel drives partialBudget with random charges and
// releases of many connections and checks, after each step, its books
// against a model: the total and the doomed bytes, the heap of the
// connections still holding, and the policy — a charge that is let through
// fits the budget once the doomed bytes are set aside; the connections it
// dooms are the largest holders, largest first, and never the grower; a
// refused grower would have held the most.
func TestPartialBudgetModel(t *testing.T) {
	const conns, budget, steps = 40, 1000, 20000
	var gauge atomic.Int64
	var b partialBudget
	b.init(budget, &gauge)
	cs := make([]*Conn, conns)
	held := make([]int64, conns) // what each connection's reader believes it holds
	for i := range cs {
		a, p := net.Pipe()
		t.Cleanup(func() { _ = a.Close(); _ = p.Close() })
		cs[i] = &Conn{nc: a}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for step := range steps {
		i := rng.IntN(conns)
		c := cs[i]
		if rng.IntN(3) == 0 || c.doomed.Load() {
			// Deliver or drop the message; a doomed connection is closed
			// and comes back as a new one.
			if held[i] != 0 {
				b.release(c, int(held[i]))
				held[i] = 0
			}
			if c.doomed.Load() {
				cs[i] = &Conn{nc: c.nc}
			}
		} else {
			want := held[i] + 1 + rng.Int64N(300)
			before := map[*Conn]int64{}
			for j, h := range b.holders {
				before[h] = b.held[j]
			}
			ok := b.charge(c, held[i], want)
			var doomedNow []int64
			for h, n := range before {
				if h != c && h.doomed.Load() {
					doomedNow = append(doomedNow, n)
				}
			}
			if ok {
				held[i] = want
				if b.total-b.doomed > budget {
					t.Fatalf("step %d: %d bytes charged past the budget once doomed bytes are set aside", step, b.total-b.doomed)
				}
			} else if !c.doomed.Load() {
				t.Fatalf("step %d: a refused grower must be doomed", step)
			}
			// The doomed are the largest of those there were.
			for _, n := range doomedNow {
				for h, m := range before {
					if h != c && !h.doomed.Load() && m > n {
						t.Fatalf("step %d: a holder of %d bytes was doomed while one of %d stays", step, n, m)
					}
				}
				if n < want && ok {
					// The grower was let through while a smaller holder went.
					t.Fatalf("step %d: a holder of %d bytes was doomed for a grower wanting %d", step, n, want)
				}
			}
			if !ok {
				for h, m := range before {
					if h != c && !h.doomed.Load() && m > want {
						t.Fatalf("step %d: the grower (%d) was refused while a holder of %d stays", step, want, m)
					}
				}
			}
		}
		ptCheckBooks(t, step, &b, cs, held)
	}
}

// ptCheckBooks checks partialBudget's books against what the readers hold.
func ptCheckBooks(t *testing.T, step int, b *partialBudget, cs []*Conn, held []int64) {
	t.Helper()
	var total, doomed int64
	inHeap := 0
	for i, c := range cs {
		total += held[i]
		switch {
		case c.doomed.Load():
			doomed += held[i]
			if c.hidx != 0 {
				t.Fatalf("step %d: a doomed connection is in the heap", step)
			}
		case held[i] != 0:
			inHeap++
			if c.hidx == 0 || b.holders[c.hidx-1] != c || b.held[c.hidx-1] != held[i] {
				t.Fatalf("step %d: connection %d (%d bytes) is not where its index says", step, i, held[i])
			}
		case c.hidx != 0:
			t.Fatalf("step %d: connection %d holds nothing but is in the heap", step, i)
		}
	}
	if total != b.total || doomed != b.doomed || total != b.gauge.Load() {
		t.Fatalf("step %d: books say %d total, %d doomed, gauge %d; the readers hold %d, %d doomed",
			step, b.total, b.doomed, b.gauge.Load(), total, doomed)
	}
	if inHeap != len(b.holders) || len(b.holders) != len(b.held) {
		t.Fatalf("step %d: %d holders in a heap of %d (%d sizes)", step, inHeap, len(b.holders), len(b.held))
	}
	for j := 1; j < len(b.held); j++ {
		if b.held[(j-1)/2] < b.held[j] {
			t.Fatalf("step %d: heap order broken at %d", step, j)
		}
	}
}
