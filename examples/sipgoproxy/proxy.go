package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/sipws/sipws"
	"github.com/sipws/sipws/sipwssipgo"
)

// The SIP side, written on sipgo: its Server's handlers, its client and
// server transactions. Browsers reach it through the sipwssipgo Bridge.
//
//   - REGISTER binds sip:USER@DOMAIN to the Contact and to the sipws
//     connection the REGISTER came on (Bridge.Conn); with RFC 5626 Outbound
//     (+sip.instance and reg-id) a reconnect replaces the old binding, and
//     sipws's Conn.BindInstance closes the old connection.
//     Bindings end with Expires: 0, on expiry, and when the connection
//     closes.
//   - A request for a user goes, statefully (a sipgo client transaction),
//     to the connection of the newest binding, with the Request-URI set to
//     the registered Contact; Bridge.Route puts it on that connection.
//   - A dialog-creating INVITE gets two Record-Route headers, each the flow
//     URI (sip:TOKEN@DOMAIN;transport=ws;lr) of one side's connection.
//     An in-dialog request comes back with them as Route headers and goes to
//     the connection of the token that is not the sender's; when that
//     connection is gone the answer is 430 Flow Failed (RFC 5626 §5.3).
//   - sipgo's server transaction answers a CANCEL (200, then 487 to the
//     INVITE); the proxy sends a CANCEL on to the callee.

const (
	defaultExpires = 600
	maxExpires     = 3600
	minForwarded   = 70
)

type proxy struct {
	domain string
	server string // Server and User-Agent header value
	log    *slog.Logger
	ws     *sipws.Server
	bridge *sipwssipgo.Bridge
	client *sipgo.Client
	reg    *registrar
	now    func() time.Time
}

// handle installs the proxy's handlers on srv.
func (p *proxy) handle(srv *sipgo.Server) {
	srv.OnRegister(p.onRegister)
	srv.OnAck(p.onAck)
	for _, m := range []func(sipgo.RequestHandler){srv.OnInvite, srv.OnBye, srv.OnMessage, srv.OnOptions,
		srv.OnInfo, srv.OnUpdate, srv.OnRefer, srv.OnNotify, srv.OnSubscribe, srv.OnPrack, srv.OnCancel} {
		m(p.onRequest)
	}
	srv.OnNoRoute(p.onRequest)
}

func (p *proxy) respond(tx sip.ServerTransaction, req *sip.Request, code int, reason string, hs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	res.AppendHeader(sip.NewHeader("Server", p.server))
	for _, h := range hs {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		p.log.Debug("respond", "code", code, "err", err)
	}
}

func (p *proxy) isOurHost(host string) bool { return strings.EqualFold(host, p.domain) }

// onRegister is the registrar.
func (p *proxy) onRegister(req *sip.Request, tx sip.ServerTransaction) {
	c, ok := p.bridge.Conn(req)
	if !ok {
		p.respond(tx, req, 500, "Server Internal Error (no connection)")
		return
	}
	to := req.To()
	if to == nil || !p.isOurHost(to.Address.Host) || to.Address.User == "" {
		p.respond(tx, req, 403, "Forbidden (domain not served here)")
		return
	}
	user := to.Address.User
	headerExpires := -1
	if h := req.GetHeader("Expires"); h != nil {
		v, err := strconv.ParseUint(strings.TrimSpace(h.Value()), 10, 32)
		if err != nil {
			p.respond(tx, req, 400, "Bad Request (Expires)")
			return
		}
		headerExpires = int(min(v, 1<<31))
	}
	now := p.now()
	var contacts []*sip.ContactHeader
	for _, h := range req.GetHeaders("Contact") {
		if ch, ok := h.(*sip.ContactHeader); ok {
			contacts = append(contacts, ch)
		}
	}
	agent := ""
	if h := req.GetHeader("User-Agent"); h != nil {
		agent = h.Value()
	}
	for _, ch := range contacts {
		if ch.Address.Wildcard {
			if len(contacts) != 1 || headerExpires != 0 {
				p.respond(tx, req, 400, "Bad Request (Contact: * needs Expires: 0)")
				return
			}
			p.reg.removeAll(user)
			p.respond(tx, req, 200, "OK")
			return
		}
	}
	var ok200 []sip.Header
	for _, ch := range contacts {
		exp := headerExpires
		if exp < 0 {
			exp = defaultExpires
		}
		if v, ok := ch.Params.Get("expires"); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if err != nil {
				p.respond(tx, req, 400, "Bad Request (expires parameter)")
				return
			}
			exp = int(min(n, 1<<31))
		}
		exp = min(exp, maxExpires)
		b := &binding{user: user, contact: *ch.Address.Clone(), conn: c, expires: now.Add(time.Duration(exp) * time.Second), agent: agent}
		b.instance, _ = ch.Params.Get("+sip.instance")
		if v, ok := ch.Params.Get("reg-id"); ok {
			b.regID, _ = strconv.Atoi(v)
		}
		b.key = b.contact.String()
		if b.instance != "" && b.regID > 0 {
			b.key = b.instance + ";reg-id=" + strconv.Itoa(b.regID)
		}
		aor := "sip:" + user + "@" + p.domain
		if exp == 0 {
			p.reg.remove(user, b.key)
			if b.instance != "" {
				c.UnbindInstance(aor, b.instance, b.regID)
			}
			continue
		}
		if b.instance != "" && b.regID > 0 {
			// RFC 5626: the same phone's new flow replaces its old one;
			// sipws closes the old connection (no ghost flows).
			if _, err := c.BindInstance(aor, b.instance, b.regID); err != nil {
				p.log.Info("flow not bound", "conn", c.ID(), "err", err)
			}
		}
		p.reg.put(b)
		out := ch.Clone()
		out.Params.Remove("expires")
		out.Params.Add("expires", strconv.Itoa(exp))
		ok200 = append(ok200, out)
	}
	if len(contacts) > 0 {
		p.log.Info("registered", "user", user, "conn", c.ID(), "contacts", len(ok200))
	}
	p.respond(tx, req, 200, "OK", ok200...)
}

// flowRoute is a Record-Route naming c by its flow token.
func (p *proxy) flowRoute(c *sipws.Conn) (*sip.RecordRouteHeader, error) {
	uri, err := c.FlowURI(p.domain, 0, false)
	if err != nil {
		return nil, err
	}
	rr := &sip.RecordRouteHeader{}
	if err := sip.ParseUri(uri, &rr.Address); err != nil {
		return nil, err
	}
	return rr, nil
}

// target is where a request goes: the connection, and the Request-URI.
type target struct {
	conn *sipws.Conn
	ruri *sip.Uri // nil: keep the request's
}

// routeInDialog pops our own Route headers and returns the connection of
// the flow that is not the sender's. ok is false when there is no Route of
// ours; err (430) when the flow is gone.
func (p *proxy) routeInDialog(req *sip.Request, from *sipws.Conn) (target, bool, error) {
	var mine []string
	for {
		r := req.Route()
		if r == nil || !p.isOurHost(r.Address.Host) || r.Address.User == "" {
			break
		}
		mine = append(mine, r.Address.User)
		req.RemoveHeader("Route")
	}
	if len(mine) == 0 {
		return target{}, false, nil
	}
	var err error
	for _, tok := range mine {
		c, rerr := p.ws.Registry().ResolveFlow(tok)
		if rerr != nil {
			err = rerr
			continue
		}
		if c != from {
			return target{conn: c}, true, nil
		}
	}
	if err == nil {
		err = fmt.Errorf("no flow but the sender's")
	}
	return target{}, true, err
}

// onRequest proxies a request to its target, or answers it.
func (p *proxy) onRequest(req *sip.Request, tx sip.ServerTransaction) {
	from, _ := p.bridge.Conn(req)
	t, inDialog, err := p.routeInDialog(req, from)
	if inDialog && err != nil {
		code, reason := sipws.FlowStatus(err)
		p.respond(tx, req, code, reason)
		return
	}
	if !inDialog {
		user := req.Recipient.User
		if user == "" || !p.isOurHost(req.Recipient.Host) {
			if req.Method == sip.OPTIONS {
				p.respond(tx, req, 200, "OK", sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, MESSAGE, REGISTER, INFO, UPDATE"))
			} else {
				p.respond(tx, req, 404, "Not Found")
			}
			return
		}
		bs := p.reg.lookup(user, p.now())
		if len(bs) == 0 {
			p.respond(tx, req, 404, "Not Found")
			return
		}
		t = target{conn: bs[0].conn, ruri: &bs[0].contact}
	}
	p.forward(req, tx, from, t, !inDialog && req.Method == sip.INVITE)
}

// forward sends req on t in a client transaction of its own and passes each
// response back on tx.
func (p *proxy) forward(req *sip.Request, tx sip.ServerTransaction, from *sipws.Conn, t target, recordRoute bool) {
	fwd := req.Clone()
	if t.ruri != nil {
		fwd.Recipient = *t.ruri.Clone()
	}
	if mf := fwd.MaxForwards(); mf != nil {
		if mf.Val() == 0 {
			p.respond(tx, req, 483, "Too Many Hops")
			return
		}
		mf.Dec()
	} else {
		mfh := sip.MaxForwardsHeader(minForwarded)
		fwd.AppendHeader(&mfh)
	}
	if recordRoute && from != nil {
		for _, c := range []*sipws.Conn{t.conn, from} {
			rr, err := p.flowRoute(c)
			if err != nil {
				p.respond(tx, req, 500, "Server Internal Error")
				return
			}
			fwd.PrependHeader(rr)
		}
	}
	if err := p.bridge.Route(fwd, t.conn); err != nil {
		p.respond(tx, req, 480, "Temporarily Unavailable")
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctr, err := p.client.TransactionRequest(ctx, fwd, sipgo.ClientRequestAddVia)
	if err != nil {
		p.log.Info("forward failed", "method", req.Method, "err", err)
		p.respond(tx, req, 480, "Temporarily Unavailable")
		return
	}
	defer ctr.Terminate()
	if req.IsInvite() {
		tx.OnCancel(func(*sip.Request) { go p.cancel(fwd, t.conn) })
	}
	for {
		select {
		case res := <-ctr.Responses():
			out := res.Clone()
			out.RemoveHeader("Via")
			if err := tx.Respond(out); err != nil {
				p.log.Debug("pass response", "err", err)
			}
			if res.StatusCode >= 200 {
				return
			}
		case <-ctr.Done():
			if errors.Is(ctr.Err(), sip.ErrTransactionTransport) {
				p.respond(tx, req, 480, "Temporarily Unavailable") // the callee's connection ended
			} else {
				p.respond(tx, req, 408, "Request Timeout")
			}
			return
		case <-tx.Done():
			return
		}
	}
}

// cancel sends a CANCEL for the INVITE inv (as sent, with our Via) on c.
func (p *proxy) cancel(inv *sip.Request, c *sipws.Conn) {
	req := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	req.AppendHeader(inv.Via().Clone())
	for _, name := range []string{"Max-Forwards", "From", "To", "Call-ID", "Route"} {
		for _, h := range inv.GetHeaders(name) {
			req.AppendHeader(sip.HeaderClone(h))
		}
	}
	req.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	req.AppendHeader(sip.NewHeader("Content-Length", "0"))
	if err := p.bridge.Route(req, c); err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 32*time.Second)
	defer cancel()
	res, err := p.client.Do(ctx, req, func(*sipgo.Client, *sip.Request) error { return nil })
	if err != nil {
		p.log.Debug("CANCEL", "err", err)
		return
	}
	p.log.Debug("CANCEL answered", "status", res.StatusCode)
}

// onAck passes an ACK for a 2xx (an in-dialog request with our Routes) on
// without a transaction; sipgo absorbs the ACK of a non-2xx itself.
func (p *proxy) onAck(req *sip.Request, tx sip.ServerTransaction) {
	from, _ := p.bridge.Conn(req)
	t, inDialog, err := p.routeInDialog(req, from)
	if !inDialog || err != nil {
		return
	}
	fwd := req.Clone()
	if err := p.bridge.Route(fwd, t.conn); err != nil {
		return
	}
	if err := p.client.WriteRequest(fwd, sipgo.ClientRequestAddVia); err != nil {
		p.log.Debug("ACK", "err", err)
	}
}
