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
	v6bits     int // Config.IPv6PrefixLen
	total      atomic.Int64
	mu         sync.Mutex
	byIP       map[netip.Prefix]int // by clientKey
}

func (l *connLimits) init(maxConns, perIP, v6bits int) {
	l.max, l.perIP, l.v6bits = maxConns, perIP, v6bits
	if perIP > 0 {
		l.byIP = make(map[netip.Prefix]int)
	}
}

// clientKey is what MaxConnsPerIP counts as one client: an IPv4 address (an
// IPv4-mapped IPv6 one too) as a /32, or the IPv6 prefix of v6bits bits that
// ip is in.
func clientKey(ip netip.Addr, v6bits int) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, err := ip.Prefix(v6bits)
	if err != nil {
		return netip.Prefix{} // an invalid ip; v6bits is checked by Config
	}
	return p
}

// clientKeyString names a clientKey in a refusal: the IPv4 address, or the
// IPv6 prefix.
func clientKeyString(k netip.Prefix) string {
	if k.Addr().Is4() {
		return k.Addr().String()
	}
	return k.String()
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
		k := clientKey(ip, l.v6bits)
		l.mu.Lock()
		n := l.byIP[k]
		if n >= l.perIP {
			l.mu.Unlock()
			if l.max > 0 {
				l.total.Add(-1)
			}
			return &refusal{
				status: http.StatusServiceUnavailable,
				msg:    "too many connections from " + clientKeyString(k),
				header: [][2]string{{"Retry-After", retryAfter}},
			}
		}
		l.byIP[k] = n + 1
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
		k := clientKey(ip, l.v6bits)
		l.mu.Lock()
		if n := l.byIP[k]; n <= 1 {
			delete(l.byIP, k)
		} else {
			l.byIP[k] = n - 1
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

// The headers Config.ForwardedHeader may name, spelt as in the Config.
const (
	headerXForwardedFor = "X-Forwarded-For"
	headerForwarded     = "Forwarded"
	headerXRealIP       = "X-Real-IP"
)

// forwardedHeader returns the spelling of a Config.ForwardedHeader setting
// ("" is X-Forwarded-For), or "" when it names no header we read.
func forwardedHeader(name string) string {
	switch {
	case name == "", strings.EqualFold(name, headerXForwardedFor):
		return headerXForwardedFor
	case strings.EqualFold(name, headerForwarded):
		return headerForwarded
	case strings.EqualFold(name, headerXRealIP):
		return headerXRealIP
	}
	return ""
}

// clientOf works out the client of r. Only when the TCP peer is in
// Config.TrustedProxies is Config.ForwardedHeader believed (and
// X-Forwarded-Proto with X-Forwarded-For); the client is the right-most hop
// of its chain that is not itself a trusted proxy (see forwardedClient). The
// client keeps the TCP peer's port, whatever the header says: a proxy's
// connections are distinct, so its clients' connections stay distinct too.
func (s *Server) clientOf(r *http.Request) client {
	peer, _ := netip.ParseAddrPort(r.RemoteAddr)
	peer = unmap(peer)
	cl := client{addr: peer, secure: r.TLS != nil}
	if len(s.cfg.TrustedProxies) == 0 || !s.trusted(peer.Addr()) {
		return cl
	}
	name := s.cfg.ForwardedHeader
	ip, proto := s.forwardedClient(name, r.Header.Values(name))
	if ip.IsValid() {
		cl.addr = netip.AddrPortFrom(ip, peer.Port())
	}
	if name == headerXForwardedFor {
		// The nearest proxy's view is the last value.
		proto = lastListValue(r.Header.Values("X-Forwarded-Proto"))
	}
	switch proto {
	case "https", "wss":
		cl.secure = true
	case "http", "ws":
		cl.secure = r.TLS != nil
	}
	return cl
}

// forwardedClient walks the hops of the forwarding header name, whose lines
// are one comma-separated list, from the nearest (the right-most, added by
// the TCP peer) back, and returns the first hop that is not a trusted proxy,
// with the proto= of the Forwarded element that names it. A hop that cannot
// be parsed, "unknown" or an obfuscated one ends the walk: the client is then
// the last trusted hop, or the zero Addr (the TCP peer) when there is none.
// Everything left of the client was written by the client itself and is
// never read. Lists are split at every comma and elements at every
// semicolon, quoted or not: proxies write addresses, which hold neither, and
// a quoted comma in a proxy's element stops the walk, at the proxy's side.
func (s *Server) forwardedClient(name string, lines []string) (ip netip.Addr, proto string) {
	for i := len(lines) - 1; i >= 0; i-- {
		rest := lines[i]
		for {
			j := strings.LastIndexByte(rest, ',')
			hop, hopProto, ok := parseHop(name, rest[j+1:])
			if !ok {
				return ip, proto
			}
			ip, proto = hop, hopProto
			if !s.trusted(hop) {
				return ip, proto
			}
			if j < 0 {
				break
			}
			rest = rest[:j]
		}
	}
	return ip, proto
}

// parseHop parses one element of the forwarding header name: an address for
// X-Forwarded-For and X-Real-IP, for= and proto= of RFC 7239 §4 for
// Forwarded. It fails on anything but exactly one usable for= address.
func parseHop(name, elem string) (ip netip.Addr, proto string, ok bool) {
	if name != headerForwarded {
		ip, ok = parseNode(strings.TrimSpace(elem))
		return ip, "", ok
	}
	var haveFor, haveProto bool
	for pair := range strings.SplitSeq(elem, ";") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue // RFC 7239 allows empty pairs
		}
		k, v, found := strings.Cut(pair, "=")
		if !found || k == "" || strings.ContainsAny(k, " \t\"") {
			return netip.Addr{}, "", false
		}
		if v, found = unquoteForwarded(v); !found {
			return netip.Addr{}, "", false
		}
		switch strings.ToLower(k) {
		case "for":
			if haveFor {
				return netip.Addr{}, "", false
			}
			haveFor = true
			if ip, ok = parseNode(v); !ok {
				return netip.Addr{}, "", false
			}
		case "proto":
			if haveProto {
				return netip.Addr{}, "", false
			}
			haveProto = true
			proto = strings.ToLower(v)
		}
	}
	return ip, proto, haveFor
}

// unquoteForwarded returns the value of a Forwarded pair: a token, or a
// quoted string without escapes (none of the values we read needs one).
func unquoteForwarded(v string) (string, bool) {
	if strings.HasPrefix(v, `"`) {
		if len(v) < 2 || !strings.HasSuffix(v, `"`) {
			return "", false
		}
		v = v[1 : len(v)-1]
	}
	if strings.ContainsAny(v, "\"\\ \t") {
		return "", false
	}
	return v, true
}

// parseNode parses a node of X-Forwarded-For, X-Real-IP or Forwarded's for=:
// "192.0.2.1", "192.0.2.1:4711", "[2001:db8::1]:4711", "[2001:db8::1]",
// "2001:db8::1". A port (RFC 7239 node-port, obfuscated or not) is checked
// and dropped; an obfuscated or "unknown" node, or an address with a zone,
// is no address. An IPv4-mapped IPv6 address is returned as IPv4.
func parseNode(v string) (netip.Addr, bool) {
	var host, port string
	hasPort, want6 := false, true
	switch {
	case strings.HasPrefix(v, "["):
		end := strings.IndexByte(v, ']')
		if end < 0 {
			return netip.Addr{}, false
		}
		host = v[1:end]
		if rest := v[end+1:]; rest != "" {
			if rest[0] != ':' {
				return netip.Addr{}, false
			}
			port, hasPort = rest[1:], true
		}
	case strings.Count(v, ":") > 1:
		host = v // a bare IPv6 address: no port
	default:
		host, port, hasPort = strings.Cut(v, ":")
		want6 = false
	}
	if hasPort && !validNodePort(port) {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" || a.Is6() != want6 {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// validNodePort reports whether p is an RFC 7239 node-port: 1 to 5 digits,
// or "_" and letters, digits, ".", "_" and "-".
func validNodePort(p string) bool {
	if p == "" || len(p) > 5 && p[0] != '_' {
		return false
	}
	for i, c := range []byte(p) {
		switch {
		case c >= '0' && c <= '9':
		case p[0] == '_' && (i == 0 || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return p != "_"
}

// lastListValue returns the last value of a comma-separated header, in lower
// case.
func lastListValue(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	l := lines[len(lines)-1]
	return strings.ToLower(strings.TrimSpace(l[strings.LastIndexByte(l, ',')+1:]))
}

func (s *Server) trusted(ip netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
