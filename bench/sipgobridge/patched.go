//go:build sipgopatched

package main

// The "patched" mode: what sipwssipgo would be if sipgo exported
// TransportLayer.HandleMessage (sipgo-handlemessage.patch): sipws's
// OnMessage parses the message and hands it to sipgo directly — no
// in-memory listener, no replayed upgrade, no re-framing, no sipgo read
// goroutine or 32 KiB buffer per connection. Built by run.sh against a
// patched copy of sipgo; connections are not cleaned up (the benchmark
// never closes one before the end).

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/sipws/sipws"
)

// pconn is the sip.Connection of one sipws connection in sipgo's pool.
type pconn struct {
	c    *sipws.Conn
	addr string
	ref  atomic.Int64
}

func (p *pconn) LocalAddr() net.Addr { return net.TCPAddrFromAddrPort(p.c.LocalAddr()) }
func (p *pconn) WriteMsg(msg sip.Message) error {
	var buf bytes.Buffer
	msg.StringWrite(&buf)
	return p.c.Send(buf.Bytes())
}
func (p *pconn) Ref(i int) int { return int(p.ref.Add(int64(i))) }
func (p *pconn) TryClose() (int, error) {
	return int(p.ref.Add(-1)), nil
}
func (p *pconn) Close() error { return nil }

func patchedHandler(mode string) (func(*sipws.Conn, sipws.Message), error) {
	if mode != "patched" {
		return nil, fmt.Errorf("mode %q: want sipws, sipgo, bridge or patched", mode)
	}
	ua, _, err := newSipgo()
	if err != nil {
		return nil, err
	}
	tpl := ua.TransportLayer()
	pool := tpl.Pool("ws")
	parser := sip.NewParser()
	var (
		mu    sync.Mutex
		conns = make(map[*sipws.Conn]*pconn)
		seq   uint64
	)
	return func(c *sipws.Conn, m sipws.Message) {
		mu.Lock()
		pc := conns[c]
		if pc == nil {
			seq++
			var a [16]byte
			a[0] = 1
			for i := range 8 {
				a[15-i] = byte(seq >> (8 * i))
			}
			pc = &pconn{c: c, addr: netip.AddrPortFrom(netip.AddrFrom16(a), 80).String()}
			pc.ref.Store(1)
			conns[c] = pc
			pool.Add(pc.addr, pc)
		}
		mu.Unlock()
		msg, err := parser.ParseSIP(m.Data)
		if err != nil {
			_ = c.Close(sipws.CloseInvalidPayload, "unparsable SIP")
			return
		}
		msg.SetTransport("WS")
		msg.SetSource(pc.addr)
		tpl.HandleMessage(msg)
	}, nil
}
