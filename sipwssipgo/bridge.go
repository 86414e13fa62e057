package sipwssipgo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
	"github.com/sipws/sipws"
)

// defaultAttachTimeout is how long a Bridge waits, by default, for sipgo to
// take a new connection from its listener.
const defaultAttachTimeout = 5 * time.Second

var (
	// ErrClosed is returned once the Bridge is closed.
	ErrClosed = errors.New("sipwssipgo: bridge closed")
	// ErrConnGone is returned for a sipws connection that has ended, and by
	// sipgo when it tries to dial a synthetic address (a UserAgent built
	// with UserAgentOptions).
	ErrConnGone = errors.New("sipwssipgo: connection gone")
)

// Config configures a Bridge. The zero value is ready to use.
type Config struct {
	// Logger receives the Bridge's logs; nil discards them.
	Logger *slog.Logger
	// AttachTimeout bounds the wait for sipgo to take a new connection from
	// the Bridge's listener (its upgrade runs on a goroutine of sipgo's).
	// 0 means 5 s.
	AttachTimeout time.Duration
}

// A Bridge hands the SIP of sipws connections to one sipgo UserAgent. Create
// it with New, call OnMessage from sipws.Config.OnMessage, and Close it
// before closing the UserAgent.
type Bridge struct {
	tpl     *sip.TransportLayer
	txl     *sip.TransactionLayer
	log     *slog.Logger
	timeout time.Duration

	ws, wss *listener
	serving sync.WaitGroup // the two Serve goroutines
	links   sync.WaitGroup // each link until sipgo has let go of its net.Conn

	mu     sync.Mutex
	byConn map[*sipws.Conn]*link
	byAddr map[string]*link
	seq    uint64
	closed bool
}

// New starts a Bridge for ua: it serves ua's WS and WSS transports on two
// in-memory listeners until Close. Build ua with UserAgentOptions.
func New(ua *sipgo.UserAgent, cfg Config) (*Bridge, error) {
	if ua == nil {
		return nil, errors.New("sipwssipgo: nil UserAgent")
	}
	if cfg.AttachTimeout < 0 {
		return nil, fmt.Errorf("sipwssipgo: AttachTimeout %v is negative", cfg.AttachTimeout)
	}
	b := &Bridge{
		tpl:     ua.TransportLayer(),
		txl:     ua.TransactionLayer(),
		log:     cfg.Logger,
		timeout: cfg.AttachTimeout,
		ws:      newListener(),
		wss:     newListener(),
		byConn:  make(map[*sipws.Conn]*link),
		byAddr:  make(map[string]*link),
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.timeout == 0 {
		b.timeout = defaultAttachTimeout
	}
	b.serving.Add(2)
	go func() {
		defer b.serving.Done()
		_ = b.tpl.ServeWS(b.ws)
	}()
	go func() {
		defer b.serving.Done()
		_ = b.tpl.ServeWSS(b.wss)
	}()
	return b, nil
}

// MaxMessageSize is the largest SIP message sipgo reads whole from a
// WebSocket: the smaller of sip.ParseMaxMessageLength and
// sip.TransportBufferReadSize (sipgo truncates a larger one). Set
// sipws.Config.MaxMessageSize to it; OnMessage closes a connection that sends
// more with 1009.
func MaxMessageSize() int64 {
	n := int64(sip.ParseMaxMessageLength)
	if b := int64(sip.TransportBufferReadSize); b < n {
		n = b
	}
	return n
}

// OnMessage hands m, received on c, to sipgo. Call it from
// sipws.Config.OnMessage; messages of an MSRP connection are left alone. It
// returns once sipgo has read the message. A CRLF keepalive is not passed on; a message larger
// than MaxMessageSize closes c with 1009; after Close, c is closed with 1001.
func (b *Bridge) OnMessage(c *sipws.Conn, m sipws.Message) {
	if c.Subprotocol() != sipws.SIP {
		return // MSRP is not sipgo's
	}
	if int64(len(m.Data)) > MaxMessageSize() {
		_ = c.Close(sipws.CloseMessageTooBig, "SIP message larger than sipgo reads")
		return
	}
	if len(bytes.Trim(m.Data, "\r\n")) == 0 {
		return // a keepalive (sipws answers CRLFCRLF itself)
	}
	l, err := b.attach(c)
	if err != nil {
		b.log.Info("sipgo did not take the connection", "conn", c.ID(), "err", err)
		if errors.Is(err, ErrClosed) {
			_ = c.Close(sipws.CloseGoingAway, "SIP server shutting down")
		} else if !errors.Is(err, ErrConnGone) {
			_ = c.Close(sipws.CloseInternalError, "SIP server unavailable")
		}
		return
	}
	l.nc.deliver(m.Data)
}

// Conn returns the sipws connection a message that sipgo received came in on,
// or that a request routed with Route leaves on.
func (b *Bridge) Conn(m sip.Message) (*sipws.Conn, bool) {
	addr := m.Source()
	if r, ok := m.(*sip.Request); ok && r.MessageData.Source() == "" {
		addr = r.Destination()
	}
	b.mu.Lock()
	l := b.byAddr[addr]
	b.mu.Unlock()
	if l == nil {
		return nil, false
	}
	return l.c, true
}

// Route makes sipgo send req on c: it sets req's destination to c's address
// in sipgo's pool and its transport to WS or WSS (c.Secure()). Use it for a
// request to a browser, whose Contact host is ".invalid" (RFC 7118
// Appendix B), after finding c by flow token or registration.
func (b *Bridge) Route(req *sip.Request, c *sipws.Conn) error {
	l, err := b.attach(c)
	if err != nil {
		return err
	}
	req.SetDestination(l.addr)
	req.SetTransport(l.network)
	return nil
}

// Len returns the number of sipws connections sipgo currently holds.
func (b *Bridge) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.byConn)
}

// Close stops the Bridge: sipgo's WS and WSS listeners close, and every
// connection leaves sipgo's pool and transaction layer. It waits until
// sipgo's read goroutines for them have ended. sipws connections stay open
// (they belong to the sipws.Server); a message on one afterwards closes it
// with 1001.
func (b *Bridge) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	links := make([]*link, 0, len(b.byConn))
	for _, l := range b.byConn {
		links = append(links, l)
	}
	b.mu.Unlock()
	_ = b.ws.Close()
	_ = b.wss.Close()
	for _, l := range links {
		l.nc.shut()
	}
	b.serving.Wait()
	b.links.Wait()
	return nil
}

// attach returns c's link, handing a new net.Conn to sipgo the first time.
func (b *Bridge) attach(c *sipws.Conn) (*link, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	l := b.byConn[c]
	if l != nil {
		b.mu.Unlock()
	} else {
		select {
		case <-c.Done():
			b.mu.Unlock()
			return nil, ErrConnGone
		default:
		}
		b.seq++
		l = newLink(b, c, b.seq)
		b.byConn[c] = l
		b.byAddr[l.addr] = l
		b.links.Add(1)
		b.mu.Unlock()
		ln := b.ws
		if c.Secure() {
			ln = b.wss
		}
		if !ln.push(l.nc) {
			l.detach()
			l.nc.release()
			return nil, ErrClosed
		}
	}

	t := time.NewTimer(b.timeout)
	defer t.Stop()
	select {
	case <-l.attached:
		return l, nil
	case <-l.gone:
		return nil, ErrConnGone
	case <-t.C:
		l.nc.shut()
		return nil, fmt.Errorf("sipwssipgo: sipgo took no connection within %v", b.timeout)
	}
}

// link is one sipws connection as sipgo sees it.
type link struct {
	b       *Bridge
	c       *sipws.Conn
	addr    string // the synthetic address: sipgo's pool key and Source
	network string // "WS" or "WSS"
	pool    *sip.ConnectionPool
	sc      *sipConn
	nc      *netConn

	attached chan struct{} // closed when sipgo reads its first frame
	gone     chan struct{} // closed by detach
	once     sync.Once
}

// synthAddr is the address of the seq-th connection: in 100::/64, the IPv6
// discard prefix (RFC 6666), so it can never be a peer's.
func synthAddr(seq uint64, port uint16) netip.AddrPort {
	var a [16]byte
	a[0] = 0x01
	for i := 0; i < 8; i++ {
		a[15-i] = byte(seq >> (8 * i))
	}
	return netip.AddrPortFrom(netip.AddrFrom16(a), port)
}

// isSynth reports whether ap is a synthetic address.
func isSynth(ap netip.AddrPort) bool {
	a := ap.Addr().As16()
	return ap.Addr().Is6() && a[0] == 0x01 && a[1] == 0 && [6]byte(a[2:8]) == [6]byte{}
}

func newLink(b *Bridge, c *sipws.Conn, seq uint64) *link {
	port := c.RemoteAddr().Port()
	network := "WS"
	if c.Secure() {
		network = "WSS"
	}
	if port == 0 {
		port = uint16(sip.DefaultPort(network))
	}
	ap := synthAddr(seq, port)
	l := &link{
		b:        b,
		c:        c,
		addr:     ap.String(),
		network:  network,
		pool:     b.tpl.Pool(network),
		attached: make(chan struct{}),
		gone:     make(chan struct{}),
	}
	l.sc = &sipConn{l: l}
	l.sc.ref.Store(1)
	l.nc = newNetConn(l, net.TCPAddrFromAddrPort(ap))
	return l
}

// onAttached runs on sipgo's read goroutine when it first reads a frame:
// sipgo has put its own connection in the pool by now, and ours replaces it.
func (l *link) onAttached() {
	l.pool.Add(l.addr, l.sc)
	close(l.attached)
	l.b.log.Debug("sipgo took connection", "conn", l.c.ID(), "addr", l.addr)
}

// detach takes l out of the Bridge, sipgo's pool and its transaction layer.
// It runs once, when sipgo closes the net.Conn (its reader ended).
func (l *link) detach() {
	l.once.Do(func() {
		b := l.b
		b.mu.Lock()
		if b.byConn[l.c] == l {
			delete(b.byConn, l.c)
		}
		delete(b.byAddr, l.addr)
		b.mu.Unlock()
		if err := l.pool.CloseAndDelete(l.sc, l.addr); err != nil {
			b.log.Debug("pool cleanup", "conn", l.c.ID(), "err", err)
		}
		b.txl.OnConnectionClose(l.sc)
		close(l.gone)
		b.log.Debug("sipgo let go of connection", "conn", l.c.ID(), "addr", l.addr)
	})
}

// UserAgentOptions are the options to build a sipgo.UserAgent for a Bridge
// with: its transaction layer ends a connection's transactions as soon as the
// connection closes, and its WS and WSS transports refuse to dial a
// synthetic address (ErrConnGone) instead of trying. Other ws:// and wss://
// dials still work (wss with the system's roots).
func UserAgentOptions() []sipgo.UserAgentOption {
	return []sipgo.UserAgentOption{
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerTerminateOnConnClose()),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerTransports(sip.TransportsConfig{
			WS:  &sip.TransportWS{DialerCreate: guardedDialer},
			WSS: &sip.TransportWSS{TransportWS: &sip.TransportWS{DialerCreate: guardedDialer}},
		})),
	}
}

// guardedDialer is sipgo's WebSocket dialer (TransportWS.DialerCreate) with
// a dial function that fails at once for a synthetic address.
func guardedDialer(laddr net.Addr) ws.Dialer {
	var d net.Dialer
	if t, ok := laddr.(*net.TCPAddr); ok && t != nil {
		d.LocalAddr = t
	}
	return ws.Dialer{
		Protocols: sip.WebSocketProtocols,
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if ap, err := netip.ParseAddrPort(addr); err == nil && isSynth(ap) {
				return nil, fmt.Errorf("dial %s: %w", addr, ErrConnGone)
			}
			return d.DialContext(ctx, network, addr)
		},
	}
}
