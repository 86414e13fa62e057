package sipws

import (
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
)

// retryAfter is the Retry-After, in seconds, of a 503 for a connection cap.
const retryAfter = "5"

// connLimits counts the connections held against Config.MaxConns and
// Config.MaxConnsPerIP. A slot is taken before the hijack and given back when
// the handshake fails or the connection's socket is closed — after a close
// handshake, that is once the peer's FIN is in or CloseTimeout has passed.
type connLimits struct {
	max, perIP int
	total      atomic.Int64
	mu         sync.Mutex
	byIP       map[netip.Addr]int
}

func (l *connLimits) init(maxConns, perIP int) {
	l.max, l.perIP = maxConns, perIP
	if perIP > 0 {
		l.byIP = make(map[netip.Addr]int)
	}
}

// acquire takes a slot for a connection from ip, or returns the refusal.
func (l *connLimits) acquire(ip netip.Addr) *refusal {
	if l.max > 0 {
		if n := l.total.Add(1); n > int64(l.max) {
			l.total.Add(-1)
			return &refusal{
				status: http.StatusServiceUnavailable,
				msg:    "too many connections",
				header: [][2]string{{"Retry-After", retryAfter}},
			}
		}
	}
	if l.perIP > 0 {
		l.mu.Lock()
		n := l.byIP[ip]
		if n >= l.perIP {
			l.mu.Unlock()
			if l.max > 0 {
				l.total.Add(-1)
			}
			return &refusal{
				status: http.StatusServiceUnavailable,
				msg:    "too many connections from " + ip.String(),
				header: [][2]string{{"Retry-After", retryAfter}},
			}
		}
		l.byIP[ip] = n + 1
		l.mu.Unlock()
	}
	return nil
}

// release gives back the slot of a connection from ip.
func (l *connLimits) release(ip netip.Addr) {
	if l.max > 0 {
		l.total.Add(-1)
	}
	if l.perIP > 0 {
		l.mu.Lock()
		if n := l.byIP[ip]; n <= 1 {
			delete(l.byIP, ip)
		} else {
			l.byIP[ip] = n - 1
		}
		l.mu.Unlock()
	}
}

// client is who a handshake comes from: the TCP peer, or the client behind a
// trusted reverse proxy.
type client struct {
	addr   netip.AddrPort
	secure bool
}

// clientOf works out the client of r. Only when the TCP peer is in
// Config.TrustedProxies are the Forwarded (RFC 7239) or, without it,
// X-Forwarded-For and X-Forwarded-Proto headers believed; the client is the
// nearest address in the chain that is not itself a trusted proxy. A
// forwarded address without a port keeps the TCP peer's port, so that
// connections from one client stay distinct.
func (s *Server) clientOf(r *http.Request) client {
	peer, _ := netip.ParseAddrPort(r.RemoteAddr)
	peer = unmap(peer)
	cl := client{addr: peer, secure: r.TLS != nil}
	if len(s.cfg.TrustedProxies) == 0 || !s.trusted(peer.Addr()) {
		return cl
	}
	var chain []netip.AddrPort // nearest last
	proto := ""
	if fw := r.Header.Values("Forwarded"); len(fw) > 0 {
		for _, line := range fw {
			for elem := range strings.SplitSeq(line, ",") {
				var hop netip.AddrPort
				var hopProto string
				for pair := range strings.SplitSeq(elem, ";") {
					k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
					if !ok {
						continue
					}
					v = strings.Trim(strings.TrimSpace(v), `"`)
					switch strings.ToLower(k) {
					case "for":
						hop = parseForwardedNode(v)
					case "proto":
						hopProto = strings.ToLower(v)
					}
				}
				chain = append(chain, hop)
				if hopProto != "" {
					proto = hopProto
				}
			}
		}
	} else {
		for _, line := range r.Header.Values("X-Forwarded-For") {
			for v := range strings.SplitSeq(line, ",") {
				chain = append(chain, parseForwardedNode(strings.TrimSpace(v)))
			}
		}
		if p := r.Header.Values("X-Forwarded-Proto"); len(p) > 0 {
			// The nearest proxy's view is the last value.
			vals := strings.Split(p[len(p)-1], ",")
			proto = strings.ToLower(strings.TrimSpace(vals[len(vals)-1]))
		}
	}
	for i := len(chain) - 1; i >= 0; i-- {
		hop := chain[i]
		if !hop.Addr().IsValid() {
			break // unknown or obfuscated: stop believing the chain
		}
		if hop.Port() == 0 {
			hop = netip.AddrPortFrom(hop.Addr(), peer.Port())
		}
		cl.addr = hop
		if !s.trusted(hop.Addr()) {
			break
		}
	}
	switch proto {
	case "https", "wss":
		cl.secure = true
	case "http", "ws":
		cl.secure = r.TLS != nil
	}
	return cl
}

func (s *Server) trusted(ip netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// parseForwardedNode parses a node of Forwarded "for=" or X-Forwarded-For:
// "192.0.2.1", "192.0.2.1:4711", "[2001:db8::1]:4711", "2001:db8::1".
func parseForwardedNode(v string) netip.AddrPort {
	if ap, err := netip.ParseAddrPort(v); err == nil {
		return unmap(ap)
	}
	v = strings.TrimSuffix(strings.TrimPrefix(v, "["), "]")
	if a, err := netip.ParseAddr(v); err == nil {
		return netip.AddrPortFrom(a.Unmap(), 0)
	}
	return netip.AddrPort{}
}
