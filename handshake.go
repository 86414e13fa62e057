package sipws

import (
	"bufio"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// websocketGUID is the GUID of RFC 6455 §1.3 that the accept key hashes in.
const websocketGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// acceptKey computes Sec-WebSocket-Accept for a Sec-WebSocket-Key.
func acceptKey(key string) string {
	h := sha1.New()
	h.Write([]byte(key))
	h.Write([]byte(websocketGUID))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// refusal is a handshake answered with an HTTP error instead of 101.
type refusal struct {
	status int
	msg    string
	header [][2]string
}

// checkRequest applies RFC 6455 §4.2.1 to r. It returns the sub-protocol the
// connection will speak, or the refusal to send. The sub-protocol is
// unnegotiated when the client offered none and
// Config.ImplicitSubprotocol stood in: the 101 then names none.
func (s *Server) checkRequest(r *http.Request) (sp Subprotocol, unnegotiated bool, ref *refusal) {
	h2 := isHTTP2(r)
	if h2 {
		if ref := s.checkHTTP2(r); ref != nil {
			return 0, false, ref
		}
	}
	if !h2 && r.Method != http.MethodGet {
		return 0, false, &refusal{
			status: http.StatusMethodNotAllowed,
			msg:    "WebSocket handshake must be a GET, not " + r.Method,
			header: [][2]string{{"Allow", "GET"}},
		}
	}
	if !h2 && (r.ProtoMajor != 1 || r.ProtoMinor < 1) {
		return 0, false, &refusal{status: http.StatusBadRequest, msg: "WebSocket handshake needs HTTP/1.1, not " + r.Proto}
	}
	if r.Host == "" {
		return 0, false, &refusal{status: http.StatusBadRequest, msg: "missing Host header"}
	}
	if !h2 && !headerHasToken(r.Header, "Upgrade", "websocket") {
		return 0, false, &refusal{status: http.StatusBadRequest, msg: `missing or invalid Upgrade header: want "websocket"`}
	}
	if !h2 && !headerHasToken(r.Header, "Connection", "upgrade") {
		return 0, false, &refusal{status: http.StatusBadRequest, msg: `missing or invalid Connection header: want the "Upgrade" token`}
	}
	versions := r.Header.Values("Sec-WebSocket-Version")
	switch {
	case len(versions) == 0:
		return 0, false, &refusal{
			status: http.StatusBadRequest,
			msg:    "missing Sec-WebSocket-Version header",
			header: [][2]string{{"Sec-WebSocket-Version", "13"}},
		}
	case len(versions) > 1 || strings.TrimSpace(versions[0]) != "13":
		return 0, false, &refusal{
			status: http.StatusUpgradeRequired,
			msg:    "unsupported Sec-WebSocket-Version " + quote(strings.Join(versions, ", ")) + ": this server speaks 13",
			header: [][2]string{{"Sec-WebSocket-Version", "13"}},
		}
	}
	if !h2 { // RFC 8441 §5: no key over HTTP/2
		keys := r.Header.Values("Sec-WebSocket-Key")
		if len(keys) != 1 {
			return 0, false, &refusal{status: http.StatusBadRequest, msg: "missing or repeated Sec-WebSocket-Key header"}
		}
		if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(keys[0])); err != nil || len(raw) != 16 {
			return 0, false, &refusal{status: http.StatusBadRequest, msg: "invalid Sec-WebSocket-Key: want the base64 encoding of 16 bytes"}
		}
	}
	sp, anyOffered := negotiateSubprotocol(r.Header, s.cfg.Subprotocols)
	if sp == 0 && s.cfg.ImplicitSubprotocol != 0 && !anyOffered {
		return s.cfg.ImplicitSubprotocol, true, nil
	}
	if sp == 0 {
		ref := &refusal{status: http.StatusBadRequest}
		var names []string
		for _, p := range subprotocolOrder {
			if s.cfg.Subprotocols&p != 0 {
				ref.header = append(ref.header, [2]string{"Sec-WebSocket-Protocol", p.Token()})
				names = append(names, p.Token())
			}
		}
		offered := strings.Join(r.Header.Values("Sec-WebSocket-Protocol"), ", ")
		if offered == "" {
			ref.msg = "missing Sec-WebSocket-Protocol: this server speaks " + strings.Join(names, ", ")
		} else {
			ref.msg = "no supported sub-protocol in " + quote(offered) + ": this server speaks " + strings.Join(names, ", ")
		}
		return 0, false, ref
	}
	return sp, false, nil
}

// headerHasToken reports whether any of the comma-separated values of the
// header holds token, compared without regard to case.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// isHeaderName reports whether name is an HTTP field name: a token of RFC
// 9110 §5.1 (letters, digits and !#$%&'*+-.^_`|~).
func isHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// refuse writes an HTTP error for a failed handshake: the status, the extra
// headers, and a one-line plain-text body that says what was wrong. The
// connection is closed after it (Connection: close), as Kamailio does.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, ref *refusal) int {
	s.stats.failedHS.Add(1)
	s.log.Info("handshake refused", "remote", r.RemoteAddr, "status", ref.status, "reason", ref.msg)
	h := w.Header()
	for _, kv := range ref.header {
		h.Add(kv[0], kv[1])
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	if !isHTTP2(r) {
		// Over HTTP/2 it would end the whole connection (GOAWAY), and
		// with it every other request of the browser's.
		h.Set("Connection", "close")
	}
	w.WriteHeader(ref.status)
	fmt.Fprintln(w, ref.msg)
	return ref.status
}

// HandleHandshake is Kamailio's ws_handle_handshake(): the host's handler
// validates what it wants (path, Host, its own auth) and then calls it. It
// checks the request against RFC 6455 §4.2.1 and the Config (sub-protocols,
// Disable, CheckOrigin, Authorize) and refuses with the right HTTP status and
// a plain-text reason before anything is hijacked: 405 for a non-GET, 400 for
// a malformed request or no enabled sub-protocol offered, 426 for a wrong
// Sec-WebSocket-Version, 403 from CheckOrigin or Authorize, 401 from
// Authorize, 503 when disabled or shut down. On success it hijacks the
// connection, writes the 101, starts the connection's goroutine and returns
// at once; the response writer must not be used afterwards.
//
// Headers the host set on w before the call go out with the 101 too.
//
// Over HTTP/2 (RFC 8441: an Extended CONNECT with :protocol websocket, which
// Go's HTTP/2 server lets through only when the process runs with
// GODEBUG=http2xconnect=1) the checks are the same but for the HTTP/1.1
// framing (no Upgrade, Connection or Sec-WebSocket-Key), success is a 200,
// and the stream cannot be taken over: HandleHandshake then returns only
// when the connection has ended, and the handler's goroutine serves the
// stream until then (Conn.HTTP2 reports such a connection). A handshake
// over HTTP/2 that is not an Extended CONNECT is refused: 400 with what the
// host must set when the process does not offer it, else 405.
func (s *Server) HandleHandshake(w http.ResponseWriter, r *http.Request) {
	var start time.Time
	if s.obs != nil {
		start = time.Now()
	}
	status, hc := s.handshake(w, r)
	if s.obs != nil {
		s.obs.Handshake(status, time.Since(start))
	}
	if hc != nil {
		hc.serve()
	}
}

// handshake does HandleHandshake's work and returns the status answered;
// over HTTP/2, on success, also the stream the handler must serve.
func (s *Server) handshake(w http.ResponseWriter, r *http.Request) (int, *h2Conn) {
	sp, unnegotiated, ref := s.checkRequest(r)
	if ref != nil {
		return s.refuse(w, r, ref), nil
	}
	if s.disabled.Load() {
		return s.refuse(w, r, &refusal{status: http.StatusServiceUnavailable, msg: "WebSocket service disabled"}), nil
	}
	cl := s.clientOf(r)
	if ref := s.limits.acquire(cl.addr.Addr()); ref != nil {
		return s.refuse(w, r, ref), nil
	}
	upgraded := false
	defer func() {
		if !upgraded {
			s.limits.release(cl.addr.Addr())
		}
	}()
	if len(s.cfg.AllowedOrigins) > 0 && !originAllowed(s.cfg.AllowedOrigins, r) {
		return s.refuse(w, r, &refusal{status: http.StatusForbidden, msg: "origin " + quote(r.Header.Get("Origin")) + " not allowed"}), nil
	}
	if s.cfg.CheckOrigin != nil && !s.cfg.CheckOrigin(r) {
		return s.refuse(w, r, &refusal{status: http.StatusForbidden, msg: "origin " + quote(r.Header.Get("Origin")) + " not allowed"}), nil
	}
	var identity any
	if s.cfg.Authorize != nil {
		id, err := s.cfg.Authorize(w, r)
		if err != nil {
			status := http.StatusForbidden
			if errors.Is(err, ErrUnauthorized) {
				status = http.StatusUnauthorized
			}
			return s.refuse(w, r, &refusal{status: status, msg: err.Error()}), nil
		}
		identity = id
	}
	if isHTTP2(r) {
		status, hc := s.upgradeHTTP2(w, r, cl, sp, unnegotiated, identity)
		upgraded = hc != nil
		return status, hc
	}
	status := s.upgrade(w, r, cl, sp, unnegotiated, identity)
	upgraded = status == http.StatusSwitchingProtocols
	return status, nil
}

// upgrade hijacks the connection, writes the 101 and starts the connection.
// It returns the status answered (0 when the connection was lost).
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request, cl client, sp Subprotocol, unnegotiated bool, identity any) int {
	// Join live before the 101, so that a Shutdown that starts once the
	// client has its 101 waits for this connection.
	s.mu.RLock()
	closed := s.closed
	if !closed {
		s.live.Add(1)
	}
	s.mu.RUnlock()
	if closed {
		return s.refuse(w, r, &refusal{status: http.StatusServiceUnavailable, msg: "server shutting down"})
	}
	started := false
	defer func() {
		if !started {
			s.liveDone()
		}
	}()
	extra := w.Header().Clone()
	nc, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return s.refuse(w, r, &refusal{status: http.StatusInternalServerError, msg: "cannot take over the connection: " + err.Error()})
	}
	// net/http may have left its read/write deadlines on the socket.
	_ = nc.SetDeadline(time.Time{})

	var b strings.Builder
	b.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ")
	b.WriteString(acceptKey(strings.TrimSpace(r.Header.Get("Sec-WebSocket-Key"))))
	if !unnegotiated {
		b.WriteString("\r\nSec-WebSocket-Protocol: ")
		b.WriteString(sp.Token())
	}
	b.WriteString("\r\n")
	var dfl *deflater
	if s.cfg.Compression {
		if p, ok := negotiateDeflate(r.Header.Values("Sec-WebSocket-Extensions")); ok {
			dfl = newDeflater(p)
			b.WriteString("Sec-WebSocket-Extensions: " + p.response() + "\r\n")
		}
	}
	if v := s.cfg.CORS.allowOrigin(r.Header.Get("Origin")); v != "" {
		b.WriteString("Access-Control-Allow-Origin: " + v + "\r\n")
	}
	for k, vs := range extra {
		switch http.CanonicalHeaderKey(k) {
		case "Upgrade", "Connection", "Sec-Websocket-Accept", "Sec-Websocket-Protocol",
			"Sec-Websocket-Extensions", "Content-Length", "Transfer-Encoding", "Access-Control-Allow-Origin":
			continue
		}
		for _, v := range vs {
			if strings.ContainsAny(k+v, "\r\n") {
				continue
			}
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n")
	_ = nc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	_, err = nc.Write([]byte(b.String()))
	_ = nc.SetWriteDeadline(time.Time{})
	if err != nil {
		s.stats.failedHS.Add(1)
		s.log.Info("handshake failed", "remote", r.RemoteAddr, "err", err)
		_ = nc.Close()
		return 0
	}

	c := s.newConn(nc, r, cl, sp, identity, pending(brw.Reader))
	c.dfl = dfl
	s.open(c)
	started = true
	go c.serve()
	return http.StatusSwitchingProtocols
}

// open registers a connection whose handshake succeeded and logs it; it
// closes it at once when Shutdown has begun.
func (s *Server) open(c *Conn) {
	sp := c.sp
	// Register under the read lock: Shutdown, which takes the write lock
	// to set closed, then finds this connection in the registry, or this
	// finds closed set and closes the connection itself. Either way the
	// host sees OnOpen and OnClosed, as for any connection that had a 101.
	s.mu.RLock()
	s.stats.opened(sp)
	s.reg.add(c)
	s.ka.add(c)
	closing, dropErr := s.closed, s.dropErr
	s.mu.RUnlock()
	// Logged here, on the handshake's goroutine: a log call on the
	// connection's own goroutine would double its stack for good.
	s.log.Info("connection opened", "conn", c.id, "remote", c.remote, "subprotocol", sp, "secure", c.secure, "proto", c.proto())
	switch {
	case dropErr != nil:
		c.abort(CauseShutdown, CloseGoingAway, "Going away", dropErr)
	case closing:
		_ = c.startClose(CauseShutdown, CloseGoingAway, "Going away", nil)
	}
}

// pending returns the bytes the HTTP server read past the request (a frame
// pipelined behind the handshake), which must be read before the socket.
func pending(br *bufio.Reader) []byte {
	n := br.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := br.Peek(n)
	return append([]byte(nil), b...)
}

// addrPort converts a net.Addr to a netip.AddrPort (zero when it cannot).
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		return a.AddrPort()
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}

// unmap returns ap with an IPv4-mapped IPv6 address turned into IPv4.
func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
