package sipws

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ConnID identifies a connection. IDs start at 1 and are never reused by a
// Server.
type ConnID uint64

// connState is the life of a connection's sending side.
type connState uint8

const (
	stateOpen    connState = iota // messages may be sent
	stateClosing                  // our close frame is queued or sent; waiting for the reply
	stateClosed                   // nothing more is sent
)

// Conn is one WebSocket connection that completed its handshake. All its
// methods are safe for concurrent use, and none of them blocks on the peer:
// Send, Ping, Pong and Close queue the frame and return; a goroutine owned by
// the connection writes it with a deadline.
type Conn struct {
	srv      *Server
	id       ConnID
	sp       Subprotocol
	secure   bool
	h2       bool // carried by an HTTP/2 stream (RFC 8441)
	remote   netip.AddrPort
	local    netip.AddrPort
	req      string // what it keeps of the handshake request: see packRequest
	identity any
	opened   time.Time

	nc  net.Conn
	raw *rawConn // reads and non-blocking writes on nc's descriptor; nil for TLS
	rb  readBuf  // the read buffer
	pre []byte   // bytes the HTTP server read past the handshake, not yet read
	// dfl is permessage-deflate's outbound state; nil when not negotiated.
	dfl *deflater

	lastRecv atomic.Int64 // Clock.Now().UnixNano() of the last frame received
	closeDL  atomic.Int64 // UnixNano read deadline while closing; 0 when none
	ka       kaState      // keepalive bookkeeping, owned by the keepalive worker
	routes   connRoutes   // routing index entries, guarded by Registry.routeMu
	// addrNewer and addrOlder link the connections with the same remote
	// address in Registry.byAddr, newest first; guarded by its shard's lock.
	addrNewer, addrOlder *Conn

	wmu     sync.Mutex // guards the fields below
	wwg     sync.WaitGroup
	state   connState
	writing bool          // a goroutine is writing the queue
	queue   []outFrame    // frames waiting to be written, in order
	spare   []outFrame    // the other queue slice, reused
	queued  int           // bytes in queue
	end     endCause      // why the connection ends; set once
	sockMu  sync.Mutex    // held while writing to nc
	done    chan struct{} // closed when the connection has ended

	graced bool        // the current frame had its grace read (read goroutine only)
	hidx   int32       // 1 + index among partialBudget.holders; 0 when not there (partialBudget.mu)
	doomed atomic.Bool // closed by partialBudget: its reads fail at once (set under partialBudget.mu)
}

func (s *Server) newConn(nc net.Conn, r *http.Request, cl client, sp Subprotocol, identity any, pre []byte) *Conn {
	req, dropped := packRequest(r, s.cfg.KeepHeaders, s.cfg.MaxKeptHeaderBytes)
	c := &Conn{
		srv:      s,
		id:       ConnID(s.nextID.Add(1)),
		sp:       sp,
		secure:   cl.secure,
		remote:   cl.addr,
		local:    unmap(addrPort(nc.LocalAddr())),
		req:      req,
		identity: identity,
		opened:   s.clock.Now(),
		nc:       nc,
		done:     make(chan struct{}),
	}
	c.raw = newRawConn(nc)
	c.rb.pool = &s.readers
	c.pre = pre
	c.lastRecv.Store(c.opened.UnixNano())
	if dropped != nil {
		s.log.Info("handshake request parts not kept", "conn", c.id, "remote", c.remote,
			"dropped", dropped, "max_kept_header_bytes", s.cfg.MaxKeptHeaderBytes)
	}
	return c
}

// ID returns the connection's ID (Kamailio's $ws_conid).
func (c *Conn) ID() ConnID { return c.id }

// Server returns the Server that owns the connection, so that a hook can
// reach it (BindInstance, ResolveFlow, MapMSRPSession, Registry) without a
// variable declared before New.
func (c *Conn) Server() *Server { return c.srv }

// Subprotocol returns the sub-protocol the connection speaks: SIP or MSRP.
func (c *Conn) Subprotocol() Subprotocol { return c.sp }

// RemoteAddr returns the peer's address ($si:$sp). Behind a trusted proxy
// it is the client's IP (Config.ForwardedHeader) with the port of the
// proxy's connection.
func (c *Conn) RemoteAddr() netip.AddrPort { return c.remote }

// LocalAddr returns the server's address the connection came in on.
func (c *Conn) LocalAddr() netip.AddrPort { return c.local }

// Secure reports a wss connection (TLS on the socket).
func (c *Conn) Secure() bool { return c.secure }

// Header returns the handshake request's headers that the connection kept
// for its life: those Config.KeepHeaders names (by default Origin and
// User-Agent), each with all its values, as long as they fit
// Config.MaxKeptHeaderBytes together with the request URI and the Host (see
// there). Every other header is dropped once the handshake is done: the
// host's handler, CheckOrigin and Authorize see them all, and what a
// connection needs later, such as who the user is, travels with it as
// Conn.Identity. The headers are kept compactly, as text, to keep an idle
// connection small: each call parses them into a new map, which the caller
// owns.
func (c *Conn) Header() http.Header {
	_, _, head := unpackRequest(c.req)
	h, err := textproto.NewReader(bufio.NewReader(strings.NewReader(head))).ReadMIMEHeader()
	if err != nil && len(h) == 0 {
		return http.Header{}
	}
	return http.Header(h)
}

// Cookies parses the cookies of the handshake request's Cookie header (RFC
// 7118 §7), when the connection kept it: Config.KeepHeaders must name
// Cookie, which it does not by default.
func (c *Conn) Cookies() []*http.Cookie {
	return (&http.Request{Header: c.Header()}).Cookies()
}

// Cookie returns the named cookie of the handshake request, or
// http.ErrNoCookie; as Cookies, it needs Cookie in Config.KeepHeaders.
func (c *Conn) Cookie(name string) (*http.Cookie, error) {
	return (&http.Request{Header: c.Header()}).Cookie(name)
}

// URL returns the handshake request's URL (path and query), parsed anew on
// each call. It is empty when the request URI was longer than
// Config.MaxKeptHeaderBytes allows.
func (c *Conn) URL() *url.URL {
	uri, _, _ := unpackRequest(c.req)
	u, err := url.ParseRequestURI(uri)
	if err != nil {
		return &url.URL{Path: uri}
	}
	return u
}

// Host returns the handshake request's Host header; "" when it was longer
// than Config.MaxKeptHeaderBytes allows.
func (c *Conn) Host() string {
	_, host, _ := unpackRequest(c.req)
	return host
}

// packedFraming is the bytes packRequest adds to what it keeps: the two
// newlines after the URI and the Host, and the blank line that ends the
// headers.
const packedFraming = 4

// packRequest keeps what a Conn tells of its handshake request in one
// string of at most limit bytes: the request URI, the Host, and the headers
// named in keep, in that order of priority. Each part ends with a newline;
// the headers are "Name: value\r\n" lines followed by a blank line. A part
// that does not fit in what is left is dropped whole (a header with all its
// values), and named in dropped; the later ones may still fit. The string is
// a fresh copy: it holds on to none of the request's memory.
func packRequest(r *http.Request, keep []string, limit int) (packed string, dropped []string) {
	room := limit - packedFraming
	fits := func(n int) bool {
		if n > room {
			return false
		}
		room -= n
		return true
	}
	uri, host := r.RequestURI, r.Host
	if !fits(len(uri)) {
		dropped, uri = append(dropped, "request URI"), ""
	}
	if !fits(len(host)) {
		dropped, host = append(dropped, "Host"), ""
	}
	kept := make([]string, 0, len(keep))
	for _, k := range keep {
		n := 0
		for _, v := range r.Header[k] {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
		switch {
		case n == 0:
		case fits(n):
			kept = append(kept, k)
		default:
			dropped = append(dropped, k)
		}
	}
	var b strings.Builder
	b.Grow(limit - room)
	b.WriteString(uri)
	b.WriteByte('\n')
	b.WriteString(host)
	b.WriteByte('\n')
	for _, k := range kept {
		for _, v := range r.Header[k] {
			b.WriteString(k)
			b.WriteString(": ")
			b.WriteString(v)
			b.WriteString("\r\n")
		}
	}
	b.WriteString("\r\n")
	return b.String(), dropped
}

// unpackRequest splits what packRequest made.
func unpackRequest(s string) (uri, host, head string) {
	uri, rest, _ := strings.Cut(s, "\n")
	host, head, _ = strings.Cut(rest, "\n")
	return uri, host, head
}

// Identity returns what Config.Authorize returned for this connection.
func (c *Conn) Identity() any { return c.identity }

// Opened returns when the handshake completed.
func (c *Conn) Opened() time.Time { return c.opened }

// LastUsed returns when the last frame was received from the peer.
func (c *Conn) LastUsed() time.Time { return time.Unix(0, c.lastRecv.Load()) }

// isOpen reports whether messages may still be sent on c.
func (c *Conn) isOpen() bool {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.state == stateOpen
}

// Buffered returns the bytes queued for the peer and not yet written to the
// socket. A host that sends in bulk can watch it to stay under
// Config.SendQueueSize, past which the connection is closed as a slow
// consumer.
func (c *Conn) Buffered() int {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.queued
}

// Done returns a channel that is closed when the connection has ended.
func (c *Conn) Done() <-chan struct{} { return c.done }

// String returns "ws:REMOTE -> ws:LOCAL #ID" (wss for a secure one).
func (c *Conn) String() string {
	return fmt.Sprintf("%s:%s -> %s:%s #%d", c.scheme(), c.remote, c.scheme(), c.local, c.id)
}

func (c *Conn) scheme() string {
	if c.secure {
		return "wss"
	}
	return "ws"
}
