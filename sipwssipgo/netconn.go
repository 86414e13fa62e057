package sipwssipgo

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/sipws/sipws"
)

// upgradeRequest is the WebSocket upgrade every netConn replays to sipgo's
// upgrader: the real one was checked by sipws.
var upgradeRequest = []byte("GET / HTTP/1.1\r\n" +
	"Host: sipwssipgo\r\n" +
	"Upgrade: websocket\r\n" +
	"Connection: Upgrade\r\n" +
	"Sec-WebSocket-Version: 13\r\n" +
	"Sec-WebSocket-Key: c2lwd3NzaXBnb2JyaWRnZQ==\r\n" +
	"Sec-WebSocket-Protocol: sip\r\n\r\n")

// netConn is the net.Conn sipgo reads one sipws connection from. Read is
// called by sipgo's read goroutine only; Write by sipgo's upgrader.
type netConn struct {
	l    *link
	addr *net.TCPAddr

	// Owned by the reader.
	hs       []byte // what is left of upgradeRequest
	started  bool   // sipgo has read past the upgrade
	hdr      [ws.MaxHeaderSize]byte
	hdrLeft  []byte // header of the frame being read
	dataLeft []byte // payload of the frame being read
	inFrame  bool

	frames   chan []byte   // OnMessage → reader, unbuffered
	consumed chan struct{} // reader → OnMessage: the frame is read (cap 1)
	done     chan struct{} // closed by shut or Close
	doneOnce sync.Once
	byUs     atomic.Bool // the Bridge ended it (not sipgo)
	relOnce  sync.Once
	rdl      atomic.Int64 // read deadline, UnixNano; 0 is none

	wmu      sync.Mutex
	wrote101 atomic.Bool
	wbuf     []byte
}

func newNetConn(l *link, addr *net.TCPAddr) *netConn {
	return &netConn{
		l:        l,
		addr:     addr,
		hs:       upgradeRequest,
		frames:   make(chan []byte),
		consumed: make(chan struct{}, 1),
		done:     make(chan struct{}),
	}
}

// deliver gives data to sipgo's reader and waits until it has read it all,
// or the connection ended.
func (nc *netConn) deliver(data []byte) {
	select {
	case nc.frames <- data:
	case <-nc.done:
		return
	}
	select {
	case <-nc.consumed:
	case <-nc.done:
	}
}

// Read gives sipgo the upgrade request, then each message as one masked
// text frame (mask key zero, so the payload is not copied or changed).
func (nc *netConn) Read(p []byte) (int, error) {
	if len(nc.hs) > 0 {
		n := copy(p, nc.hs)
		nc.hs = nc.hs[n:]
		return n, nil
	}
	if !nc.inFrame {
		if !nc.started {
			if !nc.wrote101.Load() {
				return 0, errors.New("sipwssipgo: read before the upgrade was answered")
			}
			nc.started = true
			nc.l.onAttached()
		}
		data, err := nc.next()
		if err != nil {
			return 0, err
		}
		h := ws.Header{Fin: true, OpCode: ws.OpText, Masked: true, Length: int64(len(data))}
		w := bytes.NewBuffer(nc.hdr[:0])
		if err := ws.WriteHeader(w, h); err != nil {
			return 0, err
		}
		nc.hdrLeft, nc.dataLeft, nc.inFrame = w.Bytes(), data, true
	}
	n := copy(p, nc.hdrLeft)
	nc.hdrLeft = nc.hdrLeft[n:]
	m := copy(p[n:], nc.dataLeft)
	nc.dataLeft = nc.dataLeft[m:]
	if len(nc.hdrLeft) == 0 && len(nc.dataLeft) == 0 {
		nc.inFrame, nc.dataLeft = false, nil
		nc.consumed <- struct{}{}
	}
	return n + m, nil
}

// next waits for the next message, the end of the connection, or the read
// deadline.
func (nc *netConn) next() ([]byte, error) {
	var timeout <-chan time.Time
	if d := nc.rdl.Load(); d != 0 {
		wait := time.Until(time.Unix(0, d))
		if wait <= 0 {
			return nil, os.ErrDeadlineExceeded
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case data := <-nc.frames:
		return data, nil
	case <-nc.done:
		return nil, net.ErrClosed
	case <-nc.l.c.Done():
		return nil, io.EOF
	case <-timeout:
		return nil, os.ErrDeadlineExceeded
	}
}

// Write takes the upgrader's 101. sipgo writes nothing else here: its pool
// holds the link's sipConn before it reads the first message, and CRLF
// keepalives never reach it. A write that came anyway fails (sipgo logs it
// and fails that send): it is not dropped in silence.
func (nc *netConn) Write(p []byte) (int, error) {
	nc.wmu.Lock()
	defer nc.wmu.Unlock()
	select {
	case <-nc.done:
		return 0, net.ErrClosed
	default:
	}
	if nc.wrote101.Load() {
		return 0, errors.New("sipwssipgo: sipgo wrote on its own connection instead of the pool's")
	}
	nc.wbuf = append(nc.wbuf, p...)
	i := bytes.Index(nc.wbuf, []byte("\r\n\r\n"))
	if i < 0 {
		if len(nc.wbuf) > 4096 {
			return 0, errors.New("sipwssipgo: upgrade response too long")
		}
		return len(p), nil
	}
	if !bytes.HasPrefix(nc.wbuf, []byte("HTTP/1.1 101 ")) {
		return 0, fmt.Errorf("sipwssipgo: sipgo refused the upgrade: %q", firstLine(nc.wbuf))
	}
	nc.wbuf = nil
	nc.wrote101.Store(true)
	return len(p), nil
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\r'); i >= 0 {
		return b[:i]
	}
	return b
}

// shut ends the connection from the Bridge's side: sipgo's reader returns
// net.ErrClosed and closes it.
func (nc *netConn) shut() {
	nc.byUs.Store(true)
	nc.doneOnce.Do(func() { close(nc.done) })
}

// release marks that sipgo holds the netConn no more.
func (nc *netConn) release() {
	nc.relOnce.Do(nc.l.b.links.Done)
}

// Close is called by sipgo when its reader ends (or its upgrade failed),
// with its pool's lock held: the link is taken out of the pool on a
// goroutine of its own, which the Bridge's link count waits for. When
// sipgo, not sipws or the Bridge, ended it — it could not parse a message —
// the sipws connection is closed too, with 1007: its messages would reach
// no one.
func (nc *netConn) Close() error {
	nc.doneOnce.Do(func() { close(nc.done) })
	go func() {
		l := nc.l
		l.detach()
		select {
		case <-l.c.Done():
		default:
			if !nc.byUs.Load() {
				_ = l.c.Close(sipws.CloseInvalidPayload, "SIP message rejected by sipgo")
			}
		}
		nc.release()
	}()
	return nil
}

// LocalAddr is the link's synthetic address, as RemoteAddr: sipgo v1.7.3
// also files a connection under its local address, which must not be
// shared between connections either.
func (nc *netConn) LocalAddr() net.Addr  { return nc.addr }
func (nc *netConn) RemoteAddr() net.Addr { return nc.addr }

// SetDeadline sets the read deadline; writes never block.
func (nc *netConn) SetDeadline(t time.Time) error { return nc.SetReadDeadline(t) }

// SetReadDeadline sets the deadline of the next wait for a message.
func (nc *netConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		nc.rdl.Store(0)
	} else {
		nc.rdl.Store(t.UnixNano())
	}
	return nil
}

// SetWriteDeadline does nothing: writes never block.
func (nc *netConn) SetWriteDeadline(time.Time) error { return nil }

// listener hands netConns to sipgo's Serve loop.
type listener struct {
	conns     chan *netConn
	closed    chan struct{}
	closeOnce sync.Once
}

func newListener() *listener {
	return &listener{conns: make(chan *netConn), closed: make(chan struct{})}
}

// push hands nc to Accept; false once the listener is closed.
func (ln *listener) push(nc *netConn) bool {
	select {
	case ln.conns <- nc:
		return true
	case <-ln.closed:
		return false
	}
}

func (ln *listener) Accept() (net.Conn, error) {
	select {
	case nc := <-ln.conns:
		return nc, nil
	case <-ln.closed:
		return nil, net.ErrClosed
	}
}

func (ln *listener) Close() error {
	ln.closeOnce.Do(func() { close(ln.closed) })
	return nil
}

// Addr is a synthetic address; sipgo records its port (0) as a listen port.
func (ln *listener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv6unspecified, Port: 0} }
