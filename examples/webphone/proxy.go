package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sipws/sipws"
)

// The SIP side of the web phone: a registrar and a proxy for browser phones
// that are reachable only over the WebSocket connection they opened.
//
// Routing, in short:
//
//   - REGISTER binds sip:USER@DOMAIN to the Contact and to the connection the
//     REGISTER came on (with RFC 5626 Outbound, to the +sip.instance/reg-id
//     flow, so that a reconnect replaces the old connection). Bindings end
//     with Expires: 0, on expiry, and when their connection closes. With a
//     users file the REGISTER must prove it is USER (digest, 401) and may
//     then change all of USER's bindings; in open mode a connection changes
//     only the bindings it made (see register).
//   - A request for sip:USER@DOMAIN goes to the connection of USER's
//     binding, with the Request-URI set to the registered Contact. MESSAGE
//     (and any other non-INVITE) forks to the connections of the user's
//     maxForks most recent bindings; INVITE goes to the most recent
//     registration only. With a users file the connection must have proved
//     it is the From user (407 otherwise).
//   - A request for a Contact (xxx.invalid) without our Route headers goes
//     to the connection of the To user's binding with that Contact, never to
//     a binding found by the host alone.
//   - The proxy adds a Via of its own whose branch keys a small transaction
//     table: a response is routed back by that branch to the connection the
//     request came from, after the Via is removed.
//   - A dialog-creating INVITE gets two Record-Route headers, each a flow
//     URI (sip:TOKEN@DOMAIN;transport=ws;lr) naming one side's connection.
//     An in-dialog request (ACK, BYE, re-INVITE) comes back with both as
//     Route headers: the proxy removes the Routes that are its own and sends
//     the request to the connection of the token that is not the sender's;
//     when that connection is gone the answer is 430 Flow Failed.
//   - CANCEL is answered 200 at once and sent on to the callee (after its
//     first provisional response); the callee's 487 goes back to the caller.
//     The proxy ACKs non-2xx final responses to INVITE itself and absorbs
//     the caller's ACK for them (RFC 3261 §16.7, §17.1.1.3).

// Status codes and reason phrases of the responses the proxy makes itself.
const (
	reasonFlowFailed = "Flow Failed" // RFC 5626 §11.6
)

// maxForwardsDefault is put in a forwarded request that had no Max-Forwards.
const maxForwardsDefault = 70

// maxForks caps the copies of one request: a MESSAGE for a user goes to the
// maxForks connections of their most recent bindings.
const maxForks = 10

// maxProofsPerConn caps the users one connection may prove it is.
const maxProofsPerConn = 8

// proxy is the registrar and proxy. Its methods are called from the sipws
// hooks, one goroutine per connection, and are safe for concurrent use.
type proxy struct {
	domain string
	server string // the Server header of our responses
	log    *slog.Logger
	ws     *sipws.Server // with Config.FlowTokens set
	reg    locationStore
	txns   *txnTable
	now    func() time.Time
	auth   *digestAuth // nil: open mode, nobody authenticated
	cl     *cluster    // nil: a single node (no -redis)

	// proven holds, per connection, the users it proved it is with digest
	// authentication (a REGISTER answered 401 then accepted, or a request
	// answered 407). Requests on that connection From such a user are not
	// challenged again; the proof ends with the connection.
	provenMu sync.Mutex
	proven   map[sipws.ConnID]map[string]struct{}

	parser *sip.Parser
	stop   chan struct{}
	once   sync.Once
}

// flowGone reports a ResolveFlow error for a token of ours whose connection
// has ended, in this run (ErrFlowGone) or before a restart (ErrFlowStale):
// RFC 5626 §5.3's 430 Flow Failed, after which the UA registers a new flow.
func flowGone(err error) bool {
	code, _ := sipws.FlowStatus(err)
	return code == 430
}

// maxMessageSize is the largest SIP message the parser takes: the default
// of sipws's Config.MaxMessageSize, which refuses a larger one first.
const maxMessageSize = 64 << 10

func newProxy(domain string, log *slog.Logger) *proxy {
	p := &proxy{
		domain: domain,
		server: "sipws-webphone (sipws/" + sipws.Version + ")",
		log:    log,
		reg:    newMemStore(),
		txns:   newTxnTable(),
		proven: make(map[sipws.ConnID]map[string]struct{}),
		now:    time.Now,
		parser: sip.NewParser(),
		stop:   make(chan struct{}),
	}
	p.parser.MaxMessageLength = maxMessageSize // as Config.MaxMessageSize
	return p
}

// onMessage is the sipws OnMessage hook.
func (p *proxy) onMessage(c *sipws.Conn, m sipws.Message) {
	p.handle(c, m.Data)
}

// handle handles a SIP message from a browser or from another node.
func (p *proxy) handle(c endpoint, data []byte) {
	msg, err := p.parser.ParseSIP(data)
	if err != nil {
		p.log.Warn("unparsable SIP message dropped", "conn", c.ID(), "err", err, "size", len(data))
		return
	}
	switch msg := msg.(type) {
	case *sip.Request:
		p.log.Debug("SIP in", "conn", c.ID(), "request", string(msg.Method)+" "+msg.Recipient.String())
		p.onRequest(c, msg)
	case *sip.Response:
		p.log.Debug("SIP in", "conn", c.ID(), "response", msg.StatusCode, "cseq", msg.CSeq())
		p.onResponse(c, msg)
	}
}

// onClosed is the sipws OnClosed hook: the connection's bindings go, its
// pending downstream branches fail with 480, and INVITEs it was the caller
// of are cancelled downstream.
func (p *proxy) onClosed(ev sipws.CloseEvent) {
	if bs := p.reg.dropConn(ev.ID); len(bs) > 0 {
		p.log.Info("bindings removed with their connection", "conn", ev.ID, "bindings", len(bs))
	}
	p.provenMu.Lock()
	delete(p.proven, ev.ID)
	p.provenMu.Unlock()
	p.endpointGone(ev.ID)
}

// endpointGone forgets the transactions that came from connection or link
// id and answers 480 for its pending branches.
func (p *proxy) endpointGone(id sipws.ConnID) {
	var out []outbound
	p.txns.mu.Lock()
	for _, t := range p.txns.byKey {
		if t.key.src == id {
			// Nobody to answer: a pending INVITE is cancelled downstream
			// (and kept until its branches end, to ACK their answers);
			// anything else is forgotten now.
			if t.invite() && t.final == 0 {
				out = append(out, p.cancelBranchesLocked(t)...)
				continue
			}
			p.txns.removeLocked(t)
			continue
		}
		for _, b := range t.branches {
			if b.dst == id && b.status == 0 {
				res := p.newResponse(t.orig, 480, "Temporarily Unavailable")
				out = append(out, p.branchFinalLocked(b, res)...)
			}
		}
	}
	p.txns.mu.Unlock()
	p.sendAll(out)
}

// outbound is a message to send once the transaction lock is released.
type outbound struct {
	to  sipws.ConnID
	msg sip.Message
}

func (p *proxy) sendAll(out []outbound) {
	for _, o := range out {
		_ = p.send(o.to, o.msg)
	}
}

// send sends msg on connection id.
func (p *proxy) send(id sipws.ConnID, msg sip.Message) error {
	var c endpoint
	var ok bool
	if isPeerID(id) && p.cl != nil {
		c, ok = p.cl.link(id)
	} else {
		c, ok = p.ws.Registry().Get(id)
	}
	if !ok {
		p.log.Debug("SIP not sent: connection gone", "conn", id, "msg", firstLine(msg))
		return fmt.Errorf("connection %d is gone", id)
	}
	return p.sendOn(c, msg)
}

func (p *proxy) sendOn(c endpoint, msg sip.Message) error {
	return p.sendWire(c, msg, []byte(msg.String()))
}

// sendWire sends wire, msg serialised, on c.
func (p *proxy) sendWire(c endpoint, msg sip.Message, wire []byte) error {
	if err := c.Send(wire); err != nil {
		p.log.Debug("SIP not sent", "conn", c.ID(), "msg", firstLine(msg), "err", err)
		return err
	}
	p.log.Debug("SIP out", "conn", c.ID(), "msg", firstLine(msg))
	return nil
}

func firstLine(m sip.Message) string {
	switch m := m.(type) {
	case *sip.Request:
		return m.StartLine()
	case *sip.Response:
		return m.StartLine()
	}
	return ""
}

// newResponse builds a response of ours to req.
func (p *proxy) newResponse(req *sip.Request, code int, reason string) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	res.AppendHeader(sip.NewHeader("Server", p.server))
	return res
}

// reply answers req on c.
func (p *proxy) reply(c endpoint, req *sip.Request, code int, reason string, extra ...sip.Header) {
	res := p.newResponse(req, code, reason)
	for _, h := range extra {
		res.AppendHeader(h)
	}
	_ = p.sendOn(c, res)
}

// isOurHost reports whether host names this proxy (the SIP domain).
func (p *proxy) isOurHost(host string) bool {
	return strings.EqualFold(strings.TrimSuffix(host, "."), p.domain)
}

// onRequest handles a request from c.
func (p *proxy) onRequest(c endpoint, req *sip.Request) {
	req.SetSource(c.RemoteAddr().String())
	via := req.Via()
	if via == nil {
		p.log.Warn("request without Via dropped", "conn", c.ID(), "method", req.Method)
		return
	}
	if req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil || req.CSeq().MethodName != req.Method {
		if req.Method != sip.ACK {
			p.reply(c, req, 400, "Bad Request (missing or inconsistent From, To, Call-ID or CSeq)")
		}
		return
	}
	branch, _ := via.Params.Get("branch")
	switch req.Method {
	case sip.ACK:
		p.onAck(c, req, branch)
		return
	case sip.CANCEL:
		p.onCancel(c, req, branch)
		return
	}
	key := txnKey{src: c.ID(), branch: branch, method: string(req.Method)}
	p.txns.mu.Lock()
	_, retransmission := p.txns.byKey[key]
	p.txns.mu.Unlock()
	if retransmission {
		p.log.Debug("retransmission absorbed", "conn", c.ID(), "method", req.Method, "branch", branch)
		return
	}

	orig := req.Clone()
	orig.SetBody(nil) // kept for responses of ours: the headers are enough
	if p.auth != nil && !isPeerID(c.ID()) && p.needsAuth(req) {
		if code, reason, extra := p.authorize(c, req); code != 0 {
			p.refuse(c, orig, key, code, reason, extra...)
			return
		}
		// Our realm's credentials are for us alone (RFC 3261 §22.3).
		for _, h := range req.GetHeaders("Proxy-Authorization") {
			if params, ok := parseDigest(h.Value()); ok && params["realm"] == p.domain {
				req.RemoveHeader("Proxy-Authorization")
				break
			}
		}
	}
	rt := p.route(c, req)
	switch {
	case rt.local:
		p.local(c, req)
	case rt.code != 0:
		p.refuse(c, orig, key, rt.code, rt.reason)
	default:
		p.forward(c, req, orig, key, rt.targets)
	}
}

// refuse answers a request we cannot route. For an INVITE it also records a
// finished transaction, so that the caller's ACK for our answer is absorbed.
func (p *proxy) refuse(c endpoint, orig *sip.Request, key txnKey, code int, reason string, extra ...sip.Header) {
	if orig.Method == sip.INVITE {
		// Within the budgets only; without it the ACK is merely routed.
		p.txns.add(&proxyTxn{key: key, orig: orig, final: code, deadline: p.now().Add(afterFinal), size: len(orig.String())})
	}
	p.reply(c, orig, code, reason, extra...)
}

// needsAuth reports whether req, a request that is not ACK or CANCEL, must
// come from a connection that proved it is the From user: every request
// except REGISTER (which the registrar challenges itself) and those for the
// proxy itself (OPTIONS sip:DOMAIN). In-dialog requests too, though our
// Route headers name their destination: a flow token is no proof of who
// sends, and a phone's in-dialog requests come on the connection that
// registered (or answered a 407), From its own user, so they are not
// challenged again.
func (p *proxy) needsAuth(req *sip.Request) bool {
	if req.Method == sip.REGISTER {
		return false
	}
	if rh := req.Route(); rh != nil && p.isOurHost(rh.Address.Host) && rh.Address.User != "" {
		return true
	}
	return !(p.isOurHost(req.Recipient.Host) && req.Recipient.User == "")
}

// authorize checks that the From user of req is a user connection c
// proved it is, or proves it now with Proxy-Authorization. It returns 0, or
// the refusal: 407 with challenges, 403, or 503.
func (p *proxy) authorize(c endpoint, req *sip.Request) (int, string, []sip.Header) {
	from := req.From().Address
	if !p.isOurHost(from.Host) || from.User == "" {
		return 403, "Forbidden (From is not a user of this domain)", nil
	}
	if p.isProven(c.ID(), from.User) {
		return 0, "", nil
	}
	user, res := p.auth.verify(req, "Proxy-Authorization")
	switch res {
	case authOK:
		if userKey(user) != userKey(from.User) {
			return 403, "Forbidden (authenticated as another user than From)", nil
		}
		if !p.prove(c.ID(), user) {
			return 403, "Forbidden (too many users on this connection)", nil
		}
		return 0, "", nil
	case authBusy:
		return 503, "Service Unavailable (authentication busy)", []sip.Header{sip.NewHeader("Retry-After", "5")}
	}
	return 407, "Proxy Authentication Required", p.auth.challenges("Proxy-Authenticate", res == authStale)
}

// isProven reports whether connection id proved it is user.
func (p *proxy) isProven(id sipws.ConnID, user string) bool {
	p.provenMu.Lock()
	defer p.provenMu.Unlock()
	_, ok := p.proven[id][userKey(user)]
	return ok
}

// prove records that connection id proved it is user; false when the
// connection already proved maxProofsPerConn others. It is called from
// OnMessage of id, so the OnClosed that forgets the proofs comes after.
func (p *proxy) prove(id sipws.ConnID, user string) bool {
	p.provenMu.Lock()
	defer p.provenMu.Unlock()
	m := p.proven[id]
	if m == nil {
		m = make(map[string]struct{})
		p.proven[id] = m
	}
	if _, ok := m[userKey(user)]; !ok && len(m) >= maxProofsPerConn {
		return false
	}
	m[userKey(user)] = struct{}{}
	return true
}

// mayChange reports whether connection c may remove or replace binding b:
// it made b, or it proved it is b's user.
func (p *proxy) mayChange(c *sipws.Conn, b binding) bool {
	return (b.conn == c.ID() && p.isLocal(b)) || (p.auth != nil && p.isProven(c.ID(), b.user))
}

// target is one destination of a request: a connection and, when the
// request is retargeted by the location service, the new Request-URI.
type target struct {
	conn  endpoint
	ruri  *sip.Uri
	route *sip.RouteHeader // the Path of a binding on another node: put on top
}

// routing is the outcome of route: a local request, a refusal, or targets.
type routing struct {
	local   bool
	code    int
	reason  string
	targets []target
}

// route decides where req goes. It removes the Route headers that are ours.
func (p *proxy) route(c endpoint, req *sip.Request) routing {
	tokens := p.popRoutes(req)
	if isPeerID(c.ID()) {
		// From another node: only to a flow of ours its Route names.
		if len(tokens) == 0 {
			return routing{code: 403, reason: "Forbidden (no flow token of this node)"}
		}
		return p.routeByFlow(c, tokens)
	}
	if p.cl != nil {
		// From a browser, in a dialog with a phone on another node: the
		// next Route is that node's (its flow-token URI).
		if rh := req.Route(); rh != nil {
			if node, ok := p.cl.nodeByAddr(hostPort(&rh.Address)); ok {
				l, err := p.cl.linkTo(node)
				if err != nil {
					p.log.Info("node unreachable", "node", node, "err", err)
					return routing{code: 430, reason: reasonFlowFailed}
				}
				return routing{targets: []target{{conn: l}}}
			}
			if _, isFlow := sipws.FlowTokenFromURI(rh.Address.String()); isFlow && len(tokens) > 0 && hostPort(&rh.Address) != "" {
				// A flow of a node that is no longer live (its
				// heartbeat lapsed): RFC 5626 §5.3's answer.
				return routing{code: 430, reason: reasonFlowFailed}
			}
		}
	}
	if len(tokens) > 0 {
		return p.routeByFlow(c, tokens)
	}
	if req.Method == sip.REGISTER {
		return routing{local: true}
	}
	ruri := &req.Recipient
	switch {
	case p.isOurHost(ruri.Host) && ruri.User == "":
		return routing{local: true}
	case p.isOurHost(ruri.Host):
		bs := p.reg.lookup(ruri.User, p.now())
		if len(bs) == 0 {
			// sip:TOKEN@DOMAIN reaches a flow directly, as a GRUU would.
			if _, err := p.ws.Registry().ResolveFlow(ruri.User); err == nil || flowGone(err) {
				return p.routeByFlow(c, []string{ruri.User})
			}
			return routing{code: 404, reason: "Not Found"}
		}
		var rt routing
		seen := make(map[string]bool)
		for _, b := range bs {
			if seen[p.flowOf(b)] {
				continue
			}
			seen[p.flowOf(b)] = true
			tg, ok := p.bindingTarget(b)
			if !ok {
				continue
			}
			tg.ruri = b.contact.Address.Clone()
			rt.targets = append(rt.targets, tg)
			if req.Method == sip.INVITE || len(rt.targets) == maxForks {
				// No forking of calls: the most recent registration
				// rings. Other requests: the maxForks most recent.
				break
			}
		}
		if len(rt.targets) == 0 {
			return routing{code: 480, reason: "Temporarily Unavailable"}
		}
		return rt
	case strings.HasSuffix(strings.ToLower(ruri.Host), ".invalid"):
		// A browser's Contact: an in-dialog request of a client that
		// ignored our Record-Route. It goes to the flow of the binding of
		// the To user with that Contact (user and host): anyone may put any
		// host in a Contact, so the host alone selects nothing.
		var found *binding
		for _, b := range p.reg.byContact(ruri, p.now()) {
			if userKey(b.user) != userKey(req.To().Address.User) {
				continue
			}
			if found != nil && p.flowOf(*found) != p.flowOf(b) {
				// Two connections registered the same Contact for the
				// user (possible only in open mode): not guessed.
				return routing{code: 404, reason: "Not Found (ambiguous Contact)"}
			}
			found = &b
		}
		if found == nil {
			return routing{code: 404, reason: "Not Found"}
		}
		tg, ok := p.bindingTarget(*found)
		if !ok {
			return routing{code: 480, reason: "Temporarily Unavailable"}
		}
		return routing{targets: []target{tg}}
	}
	return routing{code: 404, reason: "Not Found (domain not served here)"}
}

// popRoutes removes the Route headers at the top of req that name this
// proxy and returns the flow tokens in them, in order.
func (p *proxy) popRoutes(req *sip.Request) []string {
	var tokens []string
	for {
		rh := req.Route()
		if rh == nil || !p.isOurRoute(&rh.Address) {
			return tokens
		}
		req.RemoveHeader("Route")
		if tok, ok := sipws.FlowTokenFromURI(rh.Address.String()); ok {
			tokens = append(tokens, tok)
		}
	}
}

// routeByFlow picks the destination of an in-dialog request from the flow
// tokens of its Route headers: the last one that names a live connection
// other than the sender's. The other side's token is the last of ours in
// either direction, because the caller's route set is the reverse of the
// callee's.
func (p *proxy) routeByFlow(c endpoint, tokens []string) routing {
	var gone, invalid, self bool
	for i := len(tokens) - 1; i >= 0; i-- {
		dst, err := p.ws.Registry().ResolveFlow(tokens[i])
		switch {
		case err == nil && dst.ID() != c.ID():
			return routing{targets: []target{{conn: dst}}}
		case err == nil:
			self = true
		case flowGone(err):
			gone = true
		default:
			p.log.Info("invalid flow token", "conn", c.ID(), "err", err)
			invalid = true
		}
	}
	switch {
	case gone:
		return routing{code: 430, reason: reasonFlowFailed}
	case invalid:
		return routing{code: 403, reason: "Forbidden (invalid flow token)"}
	case self:
		return routing{code: 482, reason: "Loop Detected"}
	}
	return routing{code: 404, reason: "Not Found"}
}

// local handles a request addressed to the proxy itself.
func (p *proxy) local(c endpoint, req *sip.Request) {
	switch req.Method {
	case sip.REGISTER:
		if wc, ok := c.(*sipws.Conn); ok {
			p.register(wc, req)
			return
		}
		p.reply(c, req, 403, "Forbidden (REGISTER from another node)")
	case sip.OPTIONS:
		p.reply(c, req, 200, "OK",
			sip.NewHeader("Allow", "REGISTER, OPTIONS, INVITE, ACK, CANCEL, BYE, MESSAGE, INFO, UPDATE"),
			sip.NewHeader("Accept", "application/sdp, text/plain"),
			sip.NewHeader("Supported", "outbound, path"))
	default:
		p.reply(c, req, 405, "Method Not Allowed", sip.NewHeader("Allow", "REGISTER, OPTIONS"))
	}
}

// dialogCreating reports an out-of-dialog request that creates a dialog, to
// be record-routed.
func dialogCreating(req *sip.Request) bool {
	switch req.Method {
	case sip.INVITE, sip.SUBSCRIBE, sip.REFER:
		_, hasTag := req.To().Params.Get("tag")
		return !hasTag
	}
	return false
}

// flowRoute returns a Record-Route header naming connection c.
func (p *proxy) flowRoute(c *sipws.Conn) *sip.RecordRouteHeader {
	uri, err := p.flowURI(c)
	if err != nil {
		panic(err) // newApp sets Config.FlowTokens
	}
	rr := &sip.RecordRouteHeader{}
	if err := sip.ParseUri(uri, &rr.Address); err != nil {
		panic(fmt.Sprintf("flow URI does not parse: %v", err)) // tokens are base64url and the domain a host
	}
	return rr
}

// via returns a Via of ours with a new branch, for a request sent on dst.
func (p *proxy) via(dst endpoint) *sip.ViaHeader {
	transport := "WS"
	if dst.Secure() {
		transport = "WSS"
	}
	v := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transport, Host: p.domain, Params: sip.NewParams()}
	if isPeerID(dst.ID()) && p.cl != nil {
		// To another node: our -sip-addr, where its responses come back
		// anyway (on the same TCP connection, RFC 3261 §18.2.2).
		v.Transport = "TCP"
		if host, port, err := net.SplitHostPort(p.cl.addr); err == nil {
			v.Host = host
			v.Port, _ = strconv.Atoi(port)
		}
	}
	v.Params.Add("branch", newBranch())
	return v
}

// forward sends req to its targets, statefully unless it is an ACK.
func (p *proxy) forward(c endpoint, req, orig *sip.Request, key txnKey, targets []target) {
	if mf := req.MaxForwards(); mf == nil {
		h := sip.MaxForwardsHeader(maxForwardsDefault)
		req.AppendHeader(&h)
	} else if *mf == 0 {
		p.refuse(c, orig, key, 483, "Too Many Hops")
		return
	} else {
		*mf--
	}
	// Record-Route: a flow URI per side, each added by the node that holds
	// the flow (a request from another node has the caller's already).
	var rrSrc *sip.RecordRouteHeader
	rr := dialogCreating(req)
	if wc, ok := c.(*sipws.Conn); ok && rr {
		rrSrc = p.flowRoute(wc)
	}
	t := &proxyTxn{key: key, orig: orig, deadline: p.now().Add(nonInviteLifetime), size: len(orig.String())}
	if t.invite() {
		t.deadline = p.now().Add(inviteTimerC)
	}
	// Each branch keeps the request as sent without its body (CANCEL and
	// ACK need only the headers): what the table holds of a request is
	// its headers, once per branch, at most maxForks times.
	wires := make([][]byte, len(targets))
	for i, tg := range targets {
		r := req
		if i < len(targets)-1 {
			r = req.Clone()
		}
		if tg.ruri != nil {
			r.Recipient = *tg.ruri
		}
		if rr {
			// The callee's side on top: the callee's route set is the
			// Record-Route list in order, the caller's is its reverse.
			var hs []sip.Header
			if wc, ok := tg.conn.(*sipws.Conn); ok {
				hs = append(hs, p.flowRoute(wc))
			}
			if rrSrc != nil {
				hs = append(hs, rrSrc.Clone())
			}
			r.PrependHeader(hs...)
		}
		if tg.route != nil {
			r.PrependHeader(tg.route.Clone())
		}
		v := p.via(tg.conn)
		r.PrependHeader(v)
		wires[i] = []byte(r.String())
		t.size += len(wires[i]) - len(r.Body())
		r.SetBody(nil)
		b := &proxyBranch{txn: t, id: v.Params.GetOr("branch", ""), dst: tg.conn.ID(), req: r}
		t.branches = append(t.branches, b)
	}
	if !p.txns.add(t) {
		p.log.Warn("request refused: transaction budget spent", "conn", c.ID(), "method", orig.Method, "size", t.size)
		p.reply(c, orig, 503, "Service Unavailable (too many pending requests)", sip.NewHeader("Retry-After", "5"))
		return
	}
	if t.invite() {
		p.reply(c, orig, 100, "Trying")
	}
	var out []outbound
	for i, b := range t.branches {
		if err := p.sendWire(targets[i].conn, b.req, wires[i]); err != nil {
			p.txns.mu.Lock()
			if b.status == 0 {
				out = append(out, p.branchFinalLocked(b, p.newResponse(orig, 480, "Temporarily Unavailable"))...)
			}
			p.txns.mu.Unlock()
		}
	}
	p.sendAll(out)
}

// onAck handles an ACK: the one for a non-2xx final response we forwarded
// was already sent downstream by us and is absorbed; the one for a 2xx is
// routed like any in-dialog request. An ACK is never answered.
func (p *proxy) onAck(c endpoint, req *sip.Request, branch string) {
	p.txns.mu.Lock()
	t := p.txns.byKey[txnKey{src: c.ID(), branch: branch, method: string(sip.INVITE)}]
	absorbed := t != nil && t.final >= 300
	p.txns.mu.Unlock()
	if absorbed {
		return
	}
	rt := p.route(c, req)
	if rt.local || rt.code != 0 || len(rt.targets) == 0 {
		p.log.Debug("ACK dropped", "conn", c.ID(), "code", rt.code, "reason", rt.reason)
		return
	}
	if mf := req.MaxForwards(); mf != nil {
		if *mf == 0 {
			return
		}
		*mf--
	}
	dst := rt.targets[0]
	if dst.ruri != nil {
		req.Recipient = *dst.ruri
	}
	if dst.route != nil {
		req.PrependHeader(dst.route.Clone())
	}
	req.PrependHeader(p.via(dst.conn))
	_ = p.sendOn(dst.conn, req)
}

// onCancel answers a CANCEL with 200 and cancels the INVITE's branches.
func (p *proxy) onCancel(c endpoint, req *sip.Request, branch string) {
	p.txns.mu.Lock()
	t := p.txns.byKey[txnKey{src: c.ID(), branch: branch, method: string(sip.INVITE)}]
	if t == nil {
		p.txns.mu.Unlock()
		p.reply(c, req, 481, "Call/Transaction Does Not Exist")
		return
	}
	var out []outbound
	if t.final == 0 {
		t.canceled = true
		out = p.cancelBranchesLocked(t)
	}
	p.txns.mu.Unlock()
	p.reply(c, req, 200, "OK")
	p.sendAll(out)
}

// cancelBranchesLocked returns the CANCELs for t's pending branches that
// have had a provisional response and marks the others to be cancelled when
// one arrives (RFC 3261 §9.1). The table lock is held.
func (p *proxy) cancelBranchesLocked(t *proxyTxn) []outbound {
	var out []outbound
	for _, b := range t.branches {
		if b.status != 0 {
			continue
		}
		if b.provisional {
			out = append(out, outbound{b.dst, requestFor(b.req, sip.CANCEL, nil)})
		} else {
			b.cancelPending = true
		}
	}
	return out
}

// requestFor builds the CANCEL (RFC 3261 §9.1) or the ACK for a non-2xx
// (§17.1.1.3) of a request we sent: same Request-URI, top Via (ours, with
// its branch), Route, From, Call-ID and CSeq number; To from the response
// for an ACK.
func requestFor(sent *sip.Request, method sip.RequestMethod, res *sip.Response) *sip.Request {
	r := sip.NewRequest(method, *sent.Recipient.Clone())
	r.AppendHeader(sent.Via().Clone())
	for _, h := range sent.GetHeaders("Route") {
		r.AppendHeader(sip.HeaderClone(h))
	}
	mf := sip.MaxForwardsHeader(maxForwardsDefault)
	r.AppendHeader(&mf)
	r.AppendHeader(sip.HeaderClone(sent.From()))
	if res != nil && res.To() != nil {
		r.AppendHeader(sip.HeaderClone(res.To()))
	} else {
		r.AppendHeader(sip.HeaderClone(sent.To()))
	}
	r.AppendHeader(sip.HeaderClone(sent.CallID()))
	r.AppendHeader(&sip.CSeqHeader{SeqNo: sent.CSeq().SeqNo, MethodName: method})
	r.SetBody(nil)
	return r
}

// onResponse routes a response back by the branch of its top Via, which
// must be ours and must have come from the connection we sent the request
// on.
func (p *proxy) onResponse(c endpoint, res *sip.Response) {
	via := res.Via()
	cseq := res.CSeq()
	if via == nil || cseq == nil {
		p.log.Debug("response without Via or CSeq dropped", "conn", c.ID())
		return
	}
	id, _ := via.Params.Get("branch")
	p.txns.mu.Lock()
	b := p.txns.byBranch[id]
	if b == nil || b.dst != c.ID() {
		p.txns.mu.Unlock()
		p.log.Debug("stray response dropped", "conn", c.ID(), "status", res.StatusCode, "branch", id)
		return
	}
	if cseq.MethodName == sip.CANCEL || cseq.MethodName == sip.ACK || string(cseq.MethodName) != b.txn.key.method {
		p.txns.mu.Unlock() // the answer to our own CANCEL: hop by hop
		return
	}
	res.RemoveHeader("Via")
	t := b.txn
	var out []outbound
	switch code := res.StatusCode; {
	case code < 200:
		first := !b.provisional
		b.provisional = true
		if first && b.cancelPending && b.status == 0 {
			b.cancelPending = false
			out = append(out, outbound{b.dst, requestFor(b.req, sip.CANCEL, nil)})
		}
		if code > 100 && t.final == 0 && b.status == 0 {
			out = append(out, outbound{t.key.src, res})
		}
	case code < 300:
		if b.status == 0 {
			b.status = code
		}
		switch {
		case t.final == 0:
			t.final = code
			t.deadline = p.now().Add(afterFinal)
			out = append(out, outbound{t.key.src, res})
			out = append(out, p.cancelBranchesLocked(t)...)
		case t.invite() && t.final < 300:
			// Every 2xx to an INVITE goes upstream (RFC 3261 §16.7
			// step 5): the callee retransmits it until the ACK.
			out = append(out, outbound{t.key.src, res})
		}
	default:
		if b.status != 0 {
			break
		}
		if t.invite() {
			out = append(out, outbound{b.dst, requestFor(b.req, sip.ACK, res)})
		}
		out = append(out, p.branchFinalLocked(b, res)...)
	}
	p.txns.mu.Unlock()
	p.sendAll(out)
}

// branchFinalLocked records a non-2xx final response (received, or made up
// for a branch whose connection failed) and, when it was the last branch
// pending, returns the best final response for upstream (RFC 3261 §16.7
// step 6: a 6xx, else the lowest status). The table lock is held.
func (p *proxy) branchFinalLocked(b *proxyBranch, res *sip.Response) []outbound {
	t := b.txn
	b.status = res.StatusCode
	if t.best == nil || better(res.StatusCode, t.best.StatusCode) {
		t.best = res
	}
	if t.final != 0 || t.pending() {
		return nil
	}
	t.final = t.best.StatusCode
	t.deadline = p.now().Add(afterFinal)
	return []outbound{{t.key.src, t.best}}
}

func better(a, b int) bool {
	if (a >= 600) != (b >= 600) {
		return a >= 600
	}
	return a < b
}

// sweep ends expired transactions and bindings. A transaction that expires
// without a final response is answered 408 upstream (Timer C or F) and its
// pending INVITE branches are cancelled.
func (p *proxy) sweep() {
	now := p.now()
	if bs := p.reg.expire(now); len(bs) > 0 {
		p.log.Info("bindings expired", "count", len(bs))
		for _, b := range bs {
			p.unbindFlow(b)
		}
	}
	if p.auth != nil {
		p.auth.sweep()
	}
	var out []outbound
	p.txns.mu.Lock()
	for _, t := range p.txns.byKey {
		if now.Before(t.deadline) {
			continue
		}
		if t.final == 0 {
			if t.invite() {
				out = append(out, p.cancelBranchesLocked(t)...)
			}
			t.final = 408
			out = append(out, outbound{t.key.src, p.newResponse(t.orig, 408, "Request Timeout")})
		}
		p.txns.removeLocked(t)
	}
	p.txns.mu.Unlock()
	p.sendAll(out)
}

// run sweeps every interval until close.
func (p *proxy) run(interval time.Duration) {
	tk := time.NewTicker(interval)
	defer tk.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-tk.C:
			p.sweep()
		}
	}
}

// close stops the sweeps and, in a cluster, leaves it (after the
// WebSocket connections are gone: their bindings are deleted on the way).
func (p *proxy) close() {
	p.once.Do(func() {
		close(p.stop)
		if p.cl != nil {
			p.cl.close()
			_ = p.cl.rdb.Close()
		}
	})
}

// unbindFlow ends the RFC 5626 flow binding of an Outbound binding that
// is gone, when its connection is still open.
func (p *proxy) unbindFlow(b binding) {
	if !b.outbound || !p.isLocal(b) {
		return
	}
	if c, ok := p.ws.Registry().Get(b.conn); ok {
		c.UnbindInstance(p.aor(b.user), b.instance, b.regID)
	}
}

func (p *proxy) aor(user string) string { return "sip:" + user + "@" + p.domain }

// register is the registrar (RFC 3261 §10.3, RFC 5626 §6). With a users
// file, the REGISTER must prove (digest, 401) that it comes from its To
// user; it may then change every binding of that user, made on any
// connection. In open mode nothing is proved, and a REGISTER changes only
// the bindings made on its own connection: Contact: * removes those, and a
// binding whose key another connection holds is kept beside it.
func (p *proxy) register(c *sipws.Conn, req *sip.Request) {
	to := req.To()
	if !p.isOurHost(to.Address.Host) {
		p.reply(c, req, 403, "Forbidden (domain not served here)")
		return
	}
	user := to.Address.User
	if user == "" {
		p.reply(c, req, 400, "Bad Request (no user in To)")
		return
	}
	if p.auth != nil {
		who, res := p.auth.verify(req, "Authorization")
		switch {
		case res == authBusy:
			p.reply(c, req, 503, "Service Unavailable (authentication busy)", sip.NewHeader("Retry-After", "5"))
			return
		case res != authOK:
			p.reply(c, req, 401, "Unauthorized", p.auth.challenges("WWW-Authenticate", res == authStale)...)
			return
		case userKey(who) != userKey(user):
			p.reply(c, req, 403, "Forbidden (authenticated as another user than To)")
			return
		case !p.prove(c.ID(), user):
			p.reply(c, req, 403, "Forbidden (too many users on this connection)")
			return
		}
	}
	now := p.now()
	headerExpires := -1
	if h := req.GetHeader("Expires"); h != nil {
		v, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32)
		if err != nil {
			p.reply(c, req, 400, "Bad Request (Expires)")
			return
		}
		headerExpires = int(min(v, 1<<31))
	}
	var contacts []*sip.ContactHeader
	for _, h := range req.GetHeaders("Contact") {
		if ch, ok := h.(*sip.ContactHeader); ok {
			contacts = append(contacts, ch)
		}
	}
	outboundOffered := hasOptionTag(req, "Supported", "outbound")
	usedOutbound := false
	for _, ch := range contacts {
		if ch.Address.Wildcard {
			if len(contacts) != 1 || headerExpires != 0 {
				p.reply(c, req, 400, "Bad Request (Contact: * needs Expires: 0 and no other Contact)")
				return
			}
			var only sipws.ConnID // every binding of the user, once proved
			if p.auth == nil {
				only = c.ID()
			}
			for _, b := range p.reg.removeUser(user, only) {
				p.unbindFlow(b)
			}
			p.log.Info("unregistered", "user", user, "conn", c.ID(), "contacts", "*")
			p.registered(c, req, user, now, false)
			return
		}
	}
	// Check every Contact first: a bad one fails the request before any
	// binding changes.
	type update struct {
		ch       *sip.ContactHeader
		exp      int
		instance string
		regID    int
		key      string
		scoped   bool // key is conn-scoped: another connection's binding has the plain key
	}
	var updates []update
	for _, ch := range contacts {
		u := update{ch: ch, exp: headerExpires}
		if u.exp < 0 {
			u.exp = defaultExpires
		}
		if v, ok := paramGet(ch.Params, "expires"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				p.reply(c, req, 400, "Bad Request (expires parameter)")
				return
			}
			u.exp = int(min(n, 1<<31))
		}
		u.exp = min(u.exp, maxExpires)
		if v, ok := paramGet(ch.Params, "+sip.instance"); ok {
			u.instance = strings.Trim(strings.TrimSpace(v), `"<>`)
		}
		if v, ok := paramGet(ch.Params, "reg-id"); ok && u.instance != "" {
			// reg-id without +sip.instance means nothing (RFC 5626 §5.2).
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil || n < 1 {
				p.reply(c, req, 400, "Bad Request (reg-id)")
				return
			}
			u.regID = n
		}
		u.key = bindingKey(u.instance, u.regID, ch.Address.String())
		old, ok := p.reg.get(user, u.key)
		if scoped, own := p.reg.get(user, connScopedKey(u.key, c.ID())); own {
			// This connection's binding beside another's: it stays so.
			u.key, u.scoped, old, ok = scoped.key, true, scoped, true
		} else if ok && !p.mayChange(c, old) {
			u.key, u.scoped = connScopedKey(u.key, c.ID()), true
			old, ok = p.reg.get(user, u.key)
		}
		if ok && old.callID == req.CallID().Value() && req.CSeq().SeqNo <= old.cseq {
			// Out of order (RFC 3261 §10.3 step 7): nothing changes.
			p.reply(c, req, 500, "Server Internal Error (out-of-order REGISTER)")
			return
		}
		updates = append(updates, u)
	}
	agent := ""
	if h := req.GetHeader("User-Agent"); h != nil {
		agent = h.Value()
	}
	aor := p.aor(user)
	for _, u := range updates {
		if u.exp == 0 {
			if b, ok := p.reg.remove(user, u.key); ok {
				p.unbindFlow(b)
			}
			p.log.Info("unregistered", "user", user, "conn", c.ID(), "contact", u.ch.Address.String())
			continue
		}
		ob := outboundOffered && u.regID > 0 && !u.scoped
		stored := u.ch.Clone()
		stored.Params.Remove("expires")
		var node, run, path string
		if p.cl != nil {
			tok, err := c.FlowToken()
			if err != nil {
				p.reply(c, req, 500, "Server Internal Error (no flow token)")
				return
			}
			node, run, path = p.cl.node, p.cl.run, p.cl.pathURI(tok)
		}
		err := p.reg.put(binding{
			user: user, key: u.key, contact: *stored, conn: c.ID(), node: node, run: run, path: path,
			instance: u.instance, regID: u.regID, outbound: ob,
			callID: req.CallID().Value(), cseq: req.CSeq().SeqNo,
			agent: agent, expires: now.Add(time.Duration(u.exp) * time.Second), updated: now,
		})
		if err != nil {
			p.log.Info("binding refused", "user", user, "conn", c.ID(), "err", err)
			if !errors.Is(err, errTooManyBindings) {
				// The shared location service failed (Redis unreachable).
				p.reply(c, req, 503, "Service Unavailable (location service)", sip.NewHeader("Retry-After", "5"))
				return
			}
			p.reply(c, req, 403, fmt.Sprintf("Forbidden (too many bindings: at most %d per connection, %d per user)", maxBindingsPerConn, maxBindingsPerUser))
			return
		}
		if ob {
			// The flow of this AOR and instance is now c: a connection the
			// phone had before (it reconnected) is closed by the library.
			replaced, err := c.BindInstance(aor, u.instance, u.regID)
			if err != nil {
				p.reg.remove(user, u.key)
			}
			if errors.Is(err, sipws.ErrClosed) {
				p.reply(c, req, 500, "Server Internal Error (connection closing)")
				return
			} else if err != nil {
				p.log.Info("flow not bound", "user", user, "conn", c.ID(), "err", err)
				p.reply(c, req, 400, "Bad Request (+sip.instance)")
				return
			}
			if replaced != nil {
				p.log.Info("flow replaced", "user", user, "old_conn", replaced.ID(), "conn", c.ID())
			}
			usedOutbound = true
		}
		p.log.Info("registered", "user", user, "conn", c.ID(), "contact", u.ch.Address.String(), "expires", u.exp, "outbound", ob)
	}
	p.registered(c, req, user, now, usedOutbound)
}

// registered sends the 200 OK to a REGISTER: every current binding of the
// user with its remaining time (RFC 3261 §10.3 step 8).
func (p *proxy) registered(c *sipws.Conn, req *sip.Request, user string, now time.Time, outbound bool) {
	res := p.newResponse(req, 200, "OK")
	for _, b := range p.reg.lookup(user, now) {
		if p.auth == nil && (b.conn != c.ID() || !p.isLocal(b)) {
			continue // open mode: another connection's Contacts are not told
		}
		ch := b.contact.Clone()
		ch.Params.Add("expires", strconv.Itoa(int((b.expires.Sub(now)+time.Second/2)/time.Second)))
		res.AppendHeader(ch)
	}
	if outbound {
		res.AppendHeader(sip.NewHeader("Require", "outbound"))
	}
	res.AppendHeader(sip.NewHeader("Supported", "outbound, path"))
	_ = p.sendOn(c, res)
}

// paramGet returns a parameter by case-insensitive name.
func paramGet(ps sip.HeaderParams, name string) (string, bool) {
	for _, kv := range ps {
		if strings.EqualFold(kv.K, name) {
			return kv.V, true
		}
	}
	return "", false
}

// hasOptionTag reports whether a Supported or Require header of req lists
// tag.
func hasOptionTag(req *sip.Request, header, tag string) bool {
	for _, h := range req.GetHeaders(header) {
		for _, t := range strings.Split(h.Value(), ",") {
			if strings.EqualFold(strings.TrimSpace(t), tag) {
				return true
			}
		}
	}
	return false
}

func itoa(n int) string { return strconv.Itoa(n) }

// isLocal reports whether binding b's flow is a connection of this node
// (always, without a cluster).
func (p *proxy) isLocal(b binding) bool {
	return p.cl == nil || (b.node == p.cl.node && b.run == p.cl.run)
}

// flowOf names the flow of binding b across the cluster.
func (p *proxy) flowOf(b binding) string {
	if p.isLocal(b) {
		return "\x00" + itoa(int(b.conn))
	}
	return b.node + "\x00" + b.run + "\x00" + itoa(int(b.conn))
}

// bindingTarget returns where a request for binding b goes: its connection
// here, or the link to its node with its Path as Route.
func (p *proxy) bindingTarget(b binding) (target, bool) {
	if p.isLocal(b) {
		dst, ok := p.ws.Registry().Get(b.conn)
		return target{conn: dst}, ok
	}
	rh, err := parseRoute(b.path)
	if err != nil {
		p.log.Warn("binding with a bad Path skipped", "user", b.user, "path", b.path, "err", err)
		return target{}, false
	}
	l, err := p.cl.linkTo(b.node)
	if err != nil {
		p.log.Info("node unreachable", "node", b.node, "err", err)
		return target{}, false
	}
	return target{conn: l, route: rh}, true
}

// isOurRoute reports whether a Route URI names this proxy: the SIP domain,
// or in a cluster our -sip-addr.
func (p *proxy) isOurRoute(u *sip.Uri) bool {
	if p.cl != nil && strings.EqualFold(hostPort(u), p.cl.addr) {
		return true
	}
	return p.isOurHost(u.Host)
}

// flowURI is the Record-Route URI of connection c: on the SIP domain, or
// in a cluster on our -sip-addr, so that the other node knows where it goes.
func (p *proxy) flowURI(c *sipws.Conn) (string, error) {
	if p.cl == nil {
		return c.FlowURI(p.domain, 0, false)
	}
	tok, err := c.FlowToken()
	if err != nil {
		return "", err
	}
	return p.cl.pathURI(tok), nil
}
