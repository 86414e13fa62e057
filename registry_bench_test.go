package sipws

import (
	"net/netip"
	"testing"
)

// benchRegistry registers n fake connections (no socket, no goroutine) from
// 127.0.0.2… with distinct ports, as a server holding n phones does, with
// flow tokens configured.
func benchRegistry(b *testing.B, n int) (*Server, []*Conn) {
	b.Helper()
	ft, err := NewFlowTokens("edge1", []byte("benchmark key: 0123456789abcdef0123"))
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Keepalive: KeepaliveNone, FlowTokens: ft})
	if err != nil {
		b.Fatal(err)
	}
	conns := make([]*Conn, n)
	for i := range conns {
		ip := netip.AddrFrom4([4]byte{127, 0, byte(i >> 16), byte(2 + i%200)})
		c := &Conn{
			srv:    s,
			id:     ConnID(s.nextID.Add(1)),
			sp:     SIP,
			remote: netip.AddrPortFrom(ip, uint16(10000+i%50000)),
			nc:     discardConn{},
			done:   make(chan struct{}),
		}
		s.reg.add(c)
		conns[i] = c
	}
	return s, conns
}

// BenchmarkRegistryGet15k is Registry.Get (lookup by connection ID) among
// 15,000 connections.
func BenchmarkRegistryGet15k(b *testing.B) {
	s, conns := benchRegistry(b, 15000)
	reg := s.Registry()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := conns[i%len(conns)]
		if got, ok := reg.Get(c.id); !ok || got != c {
			b.Fatal("lookup failed")
		}
		i += 7919
	}
}

// BenchmarkRegistryGet15kParallel is Registry.Get from every CPU at once
// (shard read locks only).
func BenchmarkRegistryGet15kParallel(b *testing.B) {
	s, conns := benchRegistry(b, 15000)
	reg := s.Registry()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c := conns[i%len(conns)]
			if got, ok := reg.Get(c.id); !ok || got != c {
				b.Error("lookup failed")
				return
			}
			i += 7919
		}
	})
}

// BenchmarkRegistryByRemoteAddr15k is the lookup by the client's IP:port
// (Via received/rport, Kamailio's alias) among 15,000 connections.
func BenchmarkRegistryByRemoteAddr15k(b *testing.B) {
	s, conns := benchRegistry(b, 15000)
	reg := s.Registry()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := conns[i%len(conns)]
		if got, ok := reg.ByRemoteAddr(c.remote); !ok || got != c {
			b.Fatal("lookup failed")
		}
		i += 7919
	}
}

// BenchmarkResolveFlow15k is routing a request back by its flow token: the
// token's MAC checked, then the registry lookup, among 15,000 connections.
func BenchmarkResolveFlow15k(b *testing.B) {
	s, conns := benchRegistry(b, 15000)
	tokens := make([]string, len(conns))
	for i, c := range conns {
		tok, err := c.FlowToken()
		if err != nil {
			b.Fatal(err)
		}
		tokens[i] = tok
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		j := i % len(conns)
		if got, err := s.Registry().ResolveFlow(tokens[j]); err != nil || got != conns[j] {
			b.Fatalf("ResolveFlow = %v, %v", got, err)
		}
		i += 7919
	}
}
