package sipws

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// permutations returns every order of 0…n-1.
func permutations(n int) [][]int {
	if n == 0 {
		return [][]int{{}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := make([]int, 0, n)
			q = append(q, p[:i]...)
			q = append(q, n-1)
			q = append(q, p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

// TestRegistryByAddrIndexAnyRemovalOrder adds four connections with one
// remote address (and one with another) to the by-address index, removes
// them in every possible order, and checks after each step that
// ByRemoteAddr finds the most recently added one still there, and nothing
// once they are all gone, without touching the other address.
func TestRegistryByAddrIndexAnyRemovalOrder(t *testing.T) {
	shared := netip.MustParseAddrPort("203.0.113.7:40000")
	other := netip.MustParseAddrPort("203.0.113.8:40000")
	for _, order := range permutations(4) {
		s, err := New(Config{Keepalive: KeepaliveNone})
		require.NoError(t, err)
		reg := s.Registry()
		conns := make([]*Conn, 4)
		for i := range conns {
			conns[i] = &Conn{srv: s, id: ConnID(s.nextID.Add(1)), remote: shared}
			reg.add(conns[i])
		}
		bystander := &Conn{srv: s, id: ConnID(s.nextID.Add(1)), remote: other}
		reg.add(bystander)

		live := []bool{true, true, true, true}
		for step, gone := range order {
			reg.remove(conns[gone])
			live[gone] = false
			want := -1
			for i := range live {
				if live[i] {
					want = i // the most recent live one
				}
			}
			got, ok := reg.ByRemoteAddr(shared)
			if want < 0 {
				assert.False(t, ok, "order %v step %d: all gone", order, step)
			} else if assert.True(t, ok, "order %v step %d", order, step) {
				assert.Same(t, conns[want], got, "order %v step %d", order, step)
			}
			b, ok := reg.ByRemoteAddr(other)
			assert.True(t, ok && b == bystander, "order %v step %d: the other address", order, step)
		}
		ah := &reg.byAddr[addrShard(shared)]
		_, ok := ah.m[shared]
		assert.False(t, ok, "no entry left behind")
	}
}
