package sipws

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Version is this library's version; the default keepalive payload names it.
const Version = "0.2.0"

// Defaults that a zero Config field stands for. Those with a Kamailio
// counterpart have its default.
const (
	defaultSubprotocols      = SIP | MSRP       // sub_protocols with msrp.so loaded
	defaultMaxMessageSize    = 64 << 10         // bytes
	maxMaxMessageSize        = 64 << 20         // the largest MaxMessageSize accepted
	defaultReadBufferSize    = 512              // bytes of read buffer per connection
	defaultCloseTimeout      = 2 * time.Second  // wait for the peer's close reply
	defaultWriteTimeout      = 10 * time.Second // one write to the socket
	defaultFrameTimeout      = 30 * time.Second // a frame that has started must end within it
	defaultMessageTimeout    = 60 * time.Second // a message that has started must end within it
	defaultMaxPartialBytes   = 64 << 20         // bytes held in partial messages, server-wide
	defaultSendQueueSize     = 1 << 20          // bytes queued per connection before it is a slow consumer
	defaultKeepaliveTimeout  = 180 * time.Second
	defaultKeepaliveInterval = time.Second
	defaultKeepaliveWorkers  = 1
	defaultPongWait          = 5 * time.Second
	defaultIPv6PrefixLen     = 64 // bits of an IPv6 client that MaxConnsPerIP counts as one
)

// defaultMaxKeptHeaderBytes is what a zero Config.MaxKeptHeaderBytes stands
// for: the bytes of its handshake request a connection keeps at most.
const defaultMaxKeptHeaderBytes = 4 << 10

// defaultPingData is the keepalive payload when Config.PingData is nil, as
// Kamailio uses its Server: header.
const defaultPingData = "sipws/" + Version

// Config configures a Server. Its zero value is Kamailio's defaults: every
// zero field stands for the default named in its comment. New validates it
// once and keeps a copy; later changes to it have no effect.
type Config struct {
	// Subprotocols is the set of enabled sub-protocols (sub_protocols).
	// 0 means SIP|MSRP.
	Subprotocols Subprotocol
	// ImplicitSubprotocol is how a client that offers no Sec-WebSocket-Protocol
	// at all is served: 0 (the default, as Kamailio) refuses it with 400,
	// since SIP and MSRP clients always offer one (RFC 7118 §4.1, RFC 7977
	// §4); SIP or MSRP, an enabled one, serves it as that sub-protocol, with
	// no Sec-WebSocket-Protocol in the 101 (RFC 6455 §4.2.2). It is for
	// generic WebSocket tools, such as conformance suites, that offer none.
	ImplicitSubprotocol Subprotocol
	// CORS is the cross-origin mode of the 101 response (cors_mode).
	CORS CORSMode
	// Compression negotiates permessage-deflate (RFC 7692) with a client
	// that offers it, as browsers do. Off by default, as in every other SIP
	// WebSocket server. When on, messages of 128 bytes and more are sent
	// compressed when that makes them shorter, with the last 8 KiB sent as
	// the dictionary (the connection holds those bytes, no compressor, and
	// lets go of them when the keepalive finds it idle), and each message
	// from the client stands alone (the answer carries
	// client_no_context_takeover) and is inflated with a pooled inflater,
	// stopped at MaxMessageSize (1009), its bytes counted against
	// MaxPartialBytes while it inflates. Leave it off when an attacker can
	// put text of its choosing into messages that also carry secrets and
	// watch their sizes (RFC 7692 §8, CRIME/BREACH): see SECURITY.md.
	Compression bool

	// MaxMessageSize is the largest message accepted, all fragments
	// together; a larger one closes the connection with 1009. 0 means 64 KiB;
	// at most 64 MiB.
	MaxMessageSize int64
	// ReadBufferSize is the size of the read buffer a connection borrows
	// from a pool while it has input to read (an idle plain-TCP connection
	// holds none; a TLS one keeps its own). 0 means 512 bytes: a SIP request
	// usually arrives in one read, and larger messages are read straight
	// into their own buffer.
	ReadBufferSize int
	// CloseTimeout bounds the wait for the peer's close reply after we sent
	// a close frame, and the wait for its FIN after we closed our side.
	// 0 means 2 s.
	CloseTimeout time.Duration
	// WriteTimeout bounds every write to a socket; a write that does not end
	// in time closes the connection (CauseWriteFailure). 0 means 10 s.
	WriteTimeout time.Duration
	// FrameTimeout bounds the time between the first and last byte of one
	// frame, so that a half-sent frame cannot hold a connection; it does not
	// limit idle time. 0 means 30 s.
	FrameTimeout time.Duration
	// MessageTimeout bounds the time from the first frame of a message to
	// its last, so that a message sent in fragments that never ends — a
	// first fragment, then silence or only control frames — cannot hold its
	// buffer; a message not finished in time fails the connection with 1008
	// (CauseMessageTimeout). It does not limit idle time. 0 means 60 s,
	// or FrameTimeout when that is longer; it may not be shorter than
	// FrameTimeout, which bounds a message of one frame.
	MessageTimeout time.Duration
	// MaxPartialBytes bounds the bytes that all connections together hold in
	// messages they are still receiving (whose bytes are still on their
	// way: a message in fragments, or one frame larger than what has
	// arrived). When a message would grow past it, the connections holding
	// the most are failed with 1009 (CausePartialBytes), largest first,
	// until the growth fits — the growing connection itself once it would
	// hold the most — so that one or a few hogs go and every other
	// connection keeps receiving. The bytes are counted as buffers grow,
	// which is with the bytes that arrive (Stats.PartialBytes). 0 means
	// 64 MiB, or 4 × MaxMessageSize when that is larger: room for 1,024
	// messages of the default size limit at once, while a legitimate message
	// is partial only for the moment its bytes take to arrive. It may not be
	// less than MaxMessageSize.
	MaxPartialBytes int64
	// SendQueueSize bounds the bytes queued for one connection and not yet
	// written to its socket. A Send that would go past it closes the
	// connection as a slow consumer (1008) and returns ErrSendQueueFull;
	// one message larger than the bound is still accepted when nothing is
	// queued. 0 means 1 MiB.
	SendQueueSize int

	// MaxConns caps the connections open at once; a handshake past it is
	// refused with 503 and Retry-After, before the hijack. A connection
	// counts until its socket is closed: after a close handshake, until the
	// peer's FIN arrives or CloseTimeout passes. 0 means no cap.
	MaxConns int
	// MaxConnsPerIP caps the connections open at once from one client IP
	// (the real client behind a trusted proxy): one IPv4 address, or one
	// IPv6 prefix of IPv6PrefixLen bits. 0 means no cap.
	MaxConnsPerIP int
	// IPv6PrefixLen is the length of the IPv6 prefix that MaxConnsPerIP
	// counts as one client, since a single host or subscriber usually has a
	// whole /64 to draw addresses from. IPv4 clients (and IPv4-mapped IPv6
	// ones) are counted by address. 0 means 64; 1 to 128 are accepted (128
	// counts addresses).
	IPv6PrefixLen int
	// TrustedProxies are the networks of reverse proxies (nginx, a load
	// balancer) whose ForwardedHeader is believed, so that caps, Conn
	// addresses, dumps, logs and lookups see the real client. From anyone
	// else forwarding headers are ignored. Empty (the default) trusts no one.
	// List only the proxies: a client inside these networks can name any
	// address.
	TrustedProxies []netip.Prefix
	// ForwardedHeader is the one header, set by the trusted proxies, that
	// names the client; every other forwarding header is ignored, since a
	// proxy passes through whatever the client sent in headers it does not
	// set itself. Its chain is read from the nearest hop back to the
	// right-most address that is not a trusted proxy; a hop that cannot be
	// parsed (or "unknown", or obfuscated) stops the walk, and the client is
	// then the last trusted hop, or the TCP peer. No port is taken from it:
	// the client's port is the proxy connection's. One of:
	//   - "X-Forwarded-For" (the default, for ""): what nginx
	//     ($proxy_add_x_forwarded_for) and HAProxy (option forwardfor)
	//     append; X-Forwarded-Proto is read with it, its last value.
	//   - "Forwarded" (RFC 7239), whose for= names the hops; the proto= of
	//     the element that names the client is read with it.
	//   - "X-Real-IP", a single address that nginx sets with
	//     proxy_set_header.
	// The name is matched in any case; any other is an error of New.
	ForwardedHeader string

	// FlowTokens, when set, signs and resolves the RFC 5626 flow tokens that
	// name this server's connections (Conn.FlowToken, Registry.ResolveFlow),
	// for Path and Record-Route URIs that route requests back to browser
	// phones. Create it with NewFlowTokens; rotate keys with
	// Server.SetFlowKeys. It may be shared with other Servers or reused
	// after Shutdown: each Server's tokens carry a nonce of its own, and a
	// token of another Server is ErrFlowStale here. Without it,
	// Conn.FlowToken, Conn.FlowURI and Registry.ResolveFlow fail (FlowStatus:
	// 500).
	FlowTokens *FlowTokens

	// Framing checks that every message holds exactly one SIP message (on a
	// sip connection) or one MSRP chunk (on msrp) before it is delivered
	// (RFC 7118 §5, RFC 7977; see CheckMessage). FramingOff, the default,
	// delivers the bytes as they are.
	Framing FramingMode
	// OnInvalidMessage, when set, receives each message that fails the framing
	// check under FramingReport, with the reason, on the connection's
	// goroutine; the message is not given to OnMessage. Every such message
	// is also counted (Stats.InvalidMessages) and logged.
	OnInvalidMessage func(c *Conn, m Message, err error)

	// Keepalive is the keepalive mechanism (keepalive_mechanism); the zero
	// value is KeepalivePing, Kamailio's default.
	Keepalive KeepaliveMechanism
	// KeepaliveTimeout is the idle time (nothing received) after which a
	// keepalive is sent (keepalive_timeout). 0 means 180 s.
	KeepaliveTimeout time.Duration
	// KeepaliveInterval is how often due keepalives are looked for
	// (keepalive_interval). 0 means 1 s.
	KeepaliveInterval time.Duration
	// KeepaliveWorkers is the number of goroutines that share the keepalive
	// work (keepalive_processes). 0 means 1.
	KeepaliveWorkers int
	// PingData is the payload of keepalive Pings and Pongs and of
	// Registry.Ping/Pong (ping_application_data), at most 125 bytes. nil
	// means "sipws/<Version>".
	PingData []byte
	// PongWait is how long, after a keepalive Ping, a connection may stay
	// silent before it is declared dead and closed. 0 means 5 s, or the
	// keepalive timeout when that is shorter; it may not exceed it.
	PongWait time.Duration
	// IdleTimeout closes a connection that has received nothing for that
	// long; 0 means never. It is for KeepalivePong and KeepaliveNone, where
	// nothing else finds a silent peer: with KeepalivePing a live peer's
	// Pongs keep it from firing, and a dead one is closed after PongWait.
	IdleTimeout time.Duration
	// VerboseList logs each keepalive pass at debug level (verbose_list).
	VerboseList bool

	// Observer, when set, receives measurements for histograms (see
	// Observer; the sipwsprom sub-package provides one for Prometheus).
	Observer Observer

	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// clock is the time source of keepalive and timeouts; nil is the real
	// clock. Only tests set it (WithClock in export_test.go).
	clock clock

	// CheckOrigin, when set, is asked about every handshake that is
	// otherwise valid; false refuses it with 403 Forbidden. Browsers send
	// Origin; a server that authenticates with cookies must check it
	// (cross-site WebSocket hijacking).
	CheckOrigin func(r *http.Request) bool
	// AllowedOrigins, when not empty, limits the browsers' handshakes to
	// pages of this server (an Origin whose host:port is the request's
	// Host) and of the origins matched by these patterns; any other Origin
	// is refused with 403 Forbidden. A handshake without Origin (not a
	// browser) is let through. A pattern is matched, in any case, with
	// path.Match: against the Origin's scheme://host[:port] when it
	// contains "://", else against its host[:port] ("*.example.com",
	// "app.example.com:8443", "https://*.example.com:*"); "*" alone allows
	// any Origin, and "null" the opaque origin "null". Empty (the default)
	// checks nothing. With CheckOrigin also set, both must accept. A
	// pattern path.Match rejects is an error of New.
	AllowedOrigins []string
	// Authorize, when set, is called after CheckOrigin. It may read the
	// request's headers and cookies (RFC 7118 §7). It returns the identity
	// that travels with the Conn (Conn.Identity), or an error: one that
	// wraps ErrUnauthorized refuses with 401 Unauthorized and the headers
	// (e.g. WWW-Authenticate) the hook set on w; any other refuses with 403.
	// Headers it sets on w also go out with a 101 (e.g. Set-Cookie).
	Authorize func(w http.ResponseWriter, r *http.Request) (identity any, err error)
	// KeepHeaders names the handshake request's headers that each Conn
	// keeps for its life (Conn.Header, Conn.Cookies); every other header is
	// dropped after the handshake. nil means Origin and User-Agent; an empty
	// list keeps none. Add Cookie or Authorization only if the host reads
	// them after the upgrade: Authorize sees them all, and its identity
	// travels with the Conn. Names are matched without regard to case, and
	// their order is their priority under MaxKeptHeaderBytes.
	KeepHeaders []string
	// MaxKeptHeaderBytes bounds, per connection, what it keeps of its
	// handshake request: the request URI, the Host and the KeepHeaders, in
	// that order of priority, as text ("Name: value" lines). A part that
	// would pass the bound is dropped whole, and logged; the parts after it
	// are still kept if they fit. 0 means 4 KiB (the headers of a browser
	// with a 2 KB Cookie fit); between 128 bytes and 1 MiB.
	MaxKeptHeaderBytes int

	// OnOpen, when set, is called once for each new connection, on the
	// connection's own goroutine, before any message of it is delivered.
	OnOpen func(c *Conn)
	// OnMessage, when set, receives every message of every connection,
	// exactly once and in order, on the connection's own goroutine; the
	// next message of that connection is read only after it returns.
	OnMessage func(c *Conn, m Message)
	// OnClosed, when set, is called exactly once for each connection that
	// completed its handshake, as soon as it has ended, on the connection's
	// own goroutine. By then the connection has left the Registry and the
	// counters, and its socket is closed — or, after a close handshake, our
	// FIN is sent and the socket is closed once the peer's FIN arrives (at
	// most Config.CloseTimeout later). It holds its MaxConns and
	// MaxConnsPerIP slot until its socket is closed, which may be after
	// OnClosed returns.
	OnClosed func(ev CloseEvent)
}

// configError reports an invalid Config field.
type configError struct {
	Field  string
	Reason string
}

// Error implements error.
func (e *configError) Error() string {
	return "sipws: invalid Config." + e.Field + ": " + e.Reason
}

func quote(s string) string { return strconv.Quote(s) }

// withDefaults returns the config with every zero field set to its default,
// or an error for the first invalid field.
func (c Config) withDefaults() (Config, error) {
	bad := func(field, format string, args ...any) (Config, error) {
		return c, &configError{Field: field, Reason: fmt.Sprintf(format, args...)}
	}
	if c.Subprotocols == 0 {
		c.Subprotocols = defaultSubprotocols
	}
	if c.Subprotocols&^allSubprotocols != 0 {
		return bad("Subprotocols", "unknown bits %#x (SIP=1, MSRP=2)", uint8(c.Subprotocols&^allSubprotocols))
	}
	if c.ImplicitSubprotocol != 0 && (c.ImplicitSubprotocol.Token() == "" || c.Subprotocols&c.ImplicitSubprotocol == 0) {
		return bad("ImplicitSubprotocol", "%s is not one enabled sub-protocol (enabled: %s)", c.ImplicitSubprotocol, c.Subprotocols)
	}
	if err := checkOriginPatterns(c.AllowedOrigins); err != nil {
		return bad("AllowedOrigins", "%v", err)
	}
	c.AllowedOrigins = append([]string(nil), c.AllowedOrigins...)
	if c.CORS > CORSEcho {
		return bad("CORS", "unknown mode %d", c.CORS)
	}
	switch {
	case c.MaxMessageSize == 0:
		c.MaxMessageSize = defaultMaxMessageSize
	case c.MaxMessageSize < 0 || c.MaxMessageSize > maxMaxMessageSize:
		return bad("MaxMessageSize", "%d is not between 1 and %d", c.MaxMessageSize, maxMaxMessageSize)
	}
	switch {
	case c.ReadBufferSize == 0:
		c.ReadBufferSize = defaultReadBufferSize
	case c.ReadBufferSize < 128 || c.ReadBufferSize > 1<<20:
		return bad("ReadBufferSize", "%d is not between 128 and %d", c.ReadBufferSize, 1<<20)
	}
	durations := []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{
		{"CloseTimeout", &c.CloseTimeout, defaultCloseTimeout},
		{"WriteTimeout", &c.WriteTimeout, defaultWriteTimeout},
		{"FrameTimeout", &c.FrameTimeout, defaultFrameTimeout},
		{"KeepaliveTimeout", &c.KeepaliveTimeout, defaultKeepaliveTimeout},
		{"KeepaliveInterval", &c.KeepaliveInterval, defaultKeepaliveInterval},
		{"IdleTimeout", &c.IdleTimeout, 0},
	}
	for _, d := range durations {
		if *d.v < 0 {
			return bad(d.name, "negative duration %v", *d.v)
		}
		if *d.v == 0 {
			*d.v = d.def
		}
	}
	switch {
	case c.MessageTimeout < 0:
		return bad("MessageTimeout", "negative duration %v", c.MessageTimeout)
	case c.MessageTimeout == 0:
		c.MessageTimeout = max(defaultMessageTimeout, c.FrameTimeout)
	case c.MessageTimeout < c.FrameTimeout:
		return bad("MessageTimeout", "%v is shorter than FrameTimeout %v", c.MessageTimeout, c.FrameTimeout)
	}
	switch {
	case c.MaxPartialBytes < 0:
		return bad("MaxPartialBytes", "negative size %d", c.MaxPartialBytes)
	case c.MaxPartialBytes == 0:
		c.MaxPartialBytes = max(defaultMaxPartialBytes, 4*c.MaxMessageSize)
	case c.MaxPartialBytes < c.MaxMessageSize:
		return bad("MaxPartialBytes", "%d is less than MaxMessageSize %d: no message of the largest size could be received", c.MaxPartialBytes, c.MaxMessageSize)
	}
	if c.MaxConns < 0 {
		return bad("MaxConns", "negative cap %d", c.MaxConns)
	}
	if c.MaxConnsPerIP < 0 {
		return bad("MaxConnsPerIP", "negative cap %d", c.MaxConnsPerIP)
	}
	switch {
	case c.IPv6PrefixLen == 0:
		c.IPv6PrefixLen = defaultIPv6PrefixLen
	case c.IPv6PrefixLen < 0 || c.IPv6PrefixLen > 128:
		return bad("IPv6PrefixLen", "%d is not between 1 and 128", c.IPv6PrefixLen)
	}
	fh := forwardedHeader(c.ForwardedHeader)
	if fh == "" {
		return bad("ForwardedHeader", "%s is not X-Forwarded-For, Forwarded or X-Real-IP", quote(c.ForwardedHeader))
	}
	c.ForwardedHeader = fh
	for _, p := range c.TrustedProxies {
		if !p.IsValid() {
			return bad("TrustedProxies", "invalid prefix %v", p)
		}
	}
	c.TrustedProxies = append([]netip.Prefix(nil), c.TrustedProxies...)
	for i, p := range c.TrustedProxies {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		c.TrustedProxies[i] = p.Masked()
	}
	switch {
	case c.SendQueueSize == 0:
		c.SendQueueSize = defaultSendQueueSize
	case c.SendQueueSize < 0:
		return bad("SendQueueSize", "negative size %d", c.SendQueueSize)
	}
	if c.Framing > FramingClose {
		return bad("Framing", "unknown mode %d", c.Framing)
	}
	if c.Keepalive > KeepaliveNone {
		return bad("Keepalive", "unknown mechanism %d", c.Keepalive)
	}
	if c.KeepaliveInterval > c.KeepaliveTimeout {
		return bad("KeepaliveInterval", "%v is longer than KeepaliveTimeout %v", c.KeepaliveInterval, c.KeepaliveTimeout)
	}
	switch {
	case c.KeepaliveWorkers == 0:
		c.KeepaliveWorkers = defaultKeepaliveWorkers
	case c.KeepaliveWorkers < 0 || c.KeepaliveWorkers > 256:
		return bad("KeepaliveWorkers", "%d is not between 1 and 256", c.KeepaliveWorkers)
	}
	if c.PingData == nil {
		c.PingData = []byte(defaultPingData)
	}
	if len(c.PingData) > maxControlPayload {
		return bad("PingData", "%d bytes, at most %d fit a control frame", len(c.PingData), maxControlPayload)
	}
	c.PingData = append([]byte(nil), c.PingData...)
	switch {
	case c.PongWait < 0:
		return bad("PongWait", "negative duration %v", c.PongWait)
	case c.PongWait == 0:
		c.PongWait = min(defaultPongWait, c.KeepaliveTimeout)
	case c.PongWait > c.KeepaliveTimeout:
		return bad("PongWait", "%v is longer than KeepaliveTimeout %v", c.PongWait, c.KeepaliveTimeout)
	}
	switch {
	case c.MaxKeptHeaderBytes == 0:
		c.MaxKeptHeaderBytes = defaultMaxKeptHeaderBytes
	case c.MaxKeptHeaderBytes < 128 || c.MaxKeptHeaderBytes > 1<<20:
		return bad("MaxKeptHeaderBytes", "%d is not between 128 and %d", c.MaxKeptHeaderBytes, 1<<20)
	}
	if c.KeepHeaders == nil {
		c.KeepHeaders = []string{"Origin", "User-Agent"}
	} else {
		keep := make([]string, 0, len(c.KeepHeaders))
		for _, name := range c.KeepHeaders {
			if !isHeaderName(name) {
				return bad("KeepHeaders", "%s is not a header name", quote(name))
			}
			if k := http.CanonicalHeaderKey(name); !slices.Contains(keep, k) {
				keep = append(keep, k)
			}
		}
		c.KeepHeaders = keep
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.clock == nil {
		c.clock = realClock{}
	}
	return c, nil
}

// Server is a SIP/MSRP-over-WebSocket server: it accepts WebSocket handshakes
// (it is an http.Handler), owns the connections it makes, delivers their
// messages to the Config hooks and keeps them alive. Create it with New; all
// its methods are safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	clock  clock
	reg    Registry
	stats  counters
	limits connLimits
	ka     *keepalive

	partial partialBudget // Config.MaxPartialBytes
	obs     Observer      // nil when none

	flows    atomic.Pointer[FlowTokens]
	flowRun  flowRun   // this Server's lifetime nonce, in every flow token it issues
	readers  sync.Pool // *[]byte blocks of ReadBufferSize, lent to busy connections
	scratch  sync.Pool // *[]byte blocks of scratchSize: data frames built for an immediate write
	nextID   atomic.Uint64
	shutdown atomic.Bool // Shutdown has begun: no lingering for FINs
	disabled atomic.Bool
	h2warn   sync.Once // the warning that WebSocket over HTTP/2 is not offered

	inflaters sync.Pool // *inflater, lent while a compressed message inflates

	// mu orders handshakes against Shutdown. A handshake joins live before
	// its 101 only while closed is false, so Shutdown waits for every
	// connection whose client saw a 101; one that registers after Shutdown
	// began closes itself (1001), or is dropped once dropErr is set.
	mu       sync.RWMutex
	closed   bool
	dropErr  error         // set when Shutdown's ctx is done: connections are dropped with it
	selfWait int           // Shutdown calls waiting on the goroutine of a connection (from a hook)
	released uint64        // counts the times every waiting Shutdown was let go
	wake     chan struct{} // closed, while Shutdown waits, when live falls or selfWait grows
	live     atomic.Int64  // one per upgrade under way or connection goroutine
}

// New validates cfg and returns a Server. It starts no goroutine: the
// keepalive workers start with the first connection and end in Shutdown.
func New(cfg Config) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: c, log: c.Logger, clock: c.clock, obs: c.Observer, flowRun: newFlowRun()}
	s.reg.init(s)
	if c.FlowTokens != nil {
		s.flows.Store(c.FlowTokens)
	}
	s.limits.init(c.MaxConns, c.MaxConnsPerIP, c.IPv6PrefixLen)
	s.partial.init(c.MaxPartialBytes, &s.stats.partial)
	size := c.ReadBufferSize
	s.readers.New = func() any {
		b := make([]byte, size)
		return &b
	}
	s.scratch.New = func() any {
		b := make([]byte, 0, scratchSize)
		return &b
	}
	s.ka = newKeepalive(s)
	return s, nil
}

// Registry returns the server's live connections.
func (s *Server) Registry() *Registry { return &s.reg }

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// Disable makes new handshakes fail with 503 Service Unavailable (the RPC
// ws.disable); open connections keep working.
func (s *Server) Disable() {
	if !s.disabled.Swap(true) {
		s.log.Warn("disabling websockets - new connections will be refused")
	}
}

// Enable lets handshakes through again after Disable (the RPC ws.enable).
// A server is enabled when created.
func (s *Server) Enable() {
	if s.disabled.Swap(false) {
		s.log.Warn("enabling websockets")
	}
}

// Enabled reports whether the server accepts handshakes.
func (s *Server) Enabled() bool { return !s.disabled.Load() }

// Shutdown stops accepting handshakes (503 from then on), closes every
// connection with 1001 "Going away", and waits until each has ended and its
// OnClosed has returned, or until ctx is done. A peer gets Config.CloseTimeout
// to answer the close; once it has, its socket is closed at once (no waiting
// for its FIN as in normal operation), so a ctx that allows CloseTimeout and a
// little more lets every connection close cleanly. A handshake under way when
// Shutdown begins either gets 503 or, when its 101 has gone out, counts like
// any connection: OnOpen, then 1001 (or the drop) and OnClosed, before
// Shutdown returns. The keepalive workers end too.
//
// When ctx is done first, Shutdown drops every remaining connection (its
// socket is closed) and returns ctx's error at once, whatever the hooks are
// doing: it does not wait for them. A connection dropped while its goroutine
// is inside a hook ends when the hook returns, and its OnClosed runs then,
// once, as always after OnOpen; the others end and run OnClosed at once, but
// possibly after Shutdown has returned. A later call of Shutdown waits for
// them again, with its own ctx.
//
// Shutdown may be called from a hook, on a connection's goroutine: it then
// waits for every other connection, not for its caller's own, which cannot
// end before the hook returns; that one has its 1001 and ends after the
// hook, with its OnClosed. (It knows such a call by the stack it runs on, and
// takes one from a hook of another Server for one from its own: it then
// leaves one of its connections, closing, to end after it returns.)
//
// http.Server.Shutdown does not touch hijacked connections: call both.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	first := !s.closed
	s.closed = true
	s.shutdown.Store(true)
	s.mu.Unlock()
	if first {
		s.log.Info("shutting down", "connections", s.reg.Len())
	}
	s.reg.each(func(c *Conn) { c.startClose(CauseShutdown, CloseGoingAway, "Going away", nil) })

	err := s.waitLive(ctx, onConnGoroutine())
	if err != nil {
		aerr := fmt.Errorf("sipws: shutdown deadline passed before the close handshake completed: %w", err)
		s.mu.Lock()
		if s.dropErr == nil {
			s.dropErr = aerr
		}
		s.mu.Unlock()
		s.reg.each(func(c *Conn) { c.abort(CauseShutdown, CloseGoingAway, "Going away", aerr) })
	}
	s.ka.stop()
	return err
}

// waitLive waits until no handshake is under way and every connection's
// goroutine has ended, or until ctx is done. With self (a Shutdown called
// from a hook), it does not wait for its caller's goroutine: it waits until
// no more goroutines are left than there are such callers, whose own cannot
// end while they wait. Once that is so, every call that waits returns
// (released): a caller set free must not make the others wait for the end of
// its connection, which those others' own hooks may be holding up.
func (s *Server) waitLive(ctx context.Context, self bool) error {
	s.mu.Lock()
	gen := s.released
	if self {
		s.selfWait++
		s.wakeLocked()
		defer func() {
			s.mu.Lock()
			s.selfWait--
			s.mu.Unlock()
		}()
	}
	s.mu.Unlock()
	for {
		s.mu.Lock()
		// live is read under mu: a goroutine that ends after this read
		// takes mu to wake this call.
		if s.live.Load() <= int64(s.selfWait) {
			s.released++
			s.wakeLocked()
		}
		if s.released != gen {
			s.mu.Unlock()
			return nil
		}
		if s.wake == nil {
			s.wake = make(chan struct{})
		}
		wake := s.wake
		s.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// liveDone is the end of a handshake that made no connection, or of a
// connection's goroutine.
func (s *Server) liveDone() {
	s.live.Add(-1)
	// Shutdown sets shutdown before it first reads live: either it reads
	// this decrement or this sees shutdown and wakes it (under mu, so not
	// between its read of live and its wait).
	if s.shutdown.Load() {
		s.mu.Lock()
		s.wakeLocked()
		s.mu.Unlock()
	}
}

// wakeLocked wakes the Shutdown calls that wait. s.mu is held.
func (s *Server) wakeLocked() {
	if s.wake != nil {
		close(s.wake)
		s.wake = nil
	}
}

// onConnGoroutine reports whether the caller runs on the goroutine of a
// connection, that is, in one of its hooks: whether (*Conn).serve, where
// every connection's goroutine starts, is on its stack. Go gives goroutines
// no identity to compare; the stack tells this without any cost to the
// connections. It cannot tell one Server's connections from another's.
func onConnGoroutine() bool {
	serve := runtime.FuncForPC(reflect.ValueOf((*Conn).serve).Pointer())
	if serve == nil {
		return false
	}
	pcs := make([]uintptr, 64)
	n := runtime.Callers(2, pcs)
	for n == len(pcs) {
		pcs = make([]uintptr, 2*len(pcs))
		n = runtime.Callers(2, pcs)
	}
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if f.Func != nil && f.Func.Entry() == serve.Entry() {
			return true
		}
		if !more {
			return false
		}
	}
}

// ServeHTTP implements http.Handler: it is HandleHandshake.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.HandleHandshake(w, r) }
