package sipws_test

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws/wsutil"
	"github.com/sipws/sipws"
)

// The routing examples show how a host routes back to browser phones, whose
// Via and Contact hosts are ".invalid" (RFC 7118): real WebSocket connections
// over loopback as in example_test.go, and SIP messages parsed and edited by
// github.com/emiago/sipgo/sip. Each example's edge is an exrEdge, whose
// callbacks only hand connections and messages over, so that the example
// reads top to bottom like host code.

// ExampleServer_BindInstance registers a browser phone the way JsSIP does,
// with RFC 5626 Outbound: the edge binds the connection to the flow of the
// registered AOR and the Contact's +sip.instance and reg-id, and answers
// with a Path that names the connection. When the same phone reconnects, the
// new connection takes the flow over and the old one is closed as replaced.
// The binding is per AOR: another user's REGISTER with the same
// +sip.instance would replace nothing.
func ExampleConn_BindInstance() {
	edge := exrStart()
	defer edge.close()

	// The host's REGISTER handling (authentication left out), as it would
	// run in OnMessage: the connection leads to its Server.
	register := func(m exrMsg) (replaced *sipws.Conn) {
		// One SIP message per WebSocket message (RFC 7118 §5); the Server
		// can also check this itself: Config.Framing.
		if err := sipws.CheckMessage(sipws.SIP, m.data); err != nil {
			panic(err)
		}
		msg, err := sip.ParseMessage(m.data)
		if err != nil {
			panic(err)
		}
		req := msg.(*sip.Request)
		aor := req.To().Address.String()
		contact := req.Contact()
		instance, _ := contact.Params.Get("+sip.instance") // quoted: BindInstance takes it as it is
		regID, _ := strconv.Atoi(contact.Params.GetOr("reg-id", "0"))
		replaced, err = m.conn.BindInstance(aor, instance, regID)
		if err != nil {
			panic(err)
		}
		// The edge adds a Path naming the flow, with ";ob" since the phone
		// uses Outbound (RFC 5626 §5.1); the registrar echoes Path in its
		// 200 OK, with Require: outbound (§6). FlowToken fails on a Server
		// without Config.FlowTokens.
		path, err := m.conn.FlowURI("edge.example.com", 443, true)
		if err != nil {
			panic(err)
		}
		req.PrependHeader(sip.NewHeader("Path", "<"+path+">"))
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		sip.CopyHeaders("Path", req, res)
		res.AppendHeader(sip.NewHeader("Require", "outbound"))
		res.AppendHeader(contact.Clone())
		if err := m.conn.Send([]byte(res.String())); err != nil {
			panic(err)
		}
		return replaced
	}

	phone1, conn1 := edge.dial("sip")
	defer phone1.Close()
	exrWrite(phone1, exrRegister(1))
	register(edge.next())
	res := exrParse(exrRead(phone1)).(*sip.Response)
	fmt.Println("phone:", res.StartLine())
	fmt.Println("  Require:", res.GetHeader("Require").Value())
	fmt.Println("  Path:", exrMask(res.GetHeader("Path").Value()))

	// The browser lost its WebSocket and opens a new one: same instance,
	// same reg-id.
	phone2, conn2 := edge.dial("sip")
	defer phone2.Close()
	exrWrite(phone2, exrRegister(2))
	replaced := register(edge.next())
	fmt.Println("reconnected phone:", exrParse(exrRead(phone2)).(*sip.Response).StartLine())
	fmt.Println("first connection replaced:", replaced == conn1)

	_, _, err := wsutil.ReadServerData(phone1) // wsutil answers the close frame
	var ce wsutil.ClosedError
	if errors.As(err, &ce) {
		fmt.Printf("first connection got close %d %q\n", ce.Code, ce.Reason)
	}
	ev := edge.nextClosed()
	fmt.Println("OnClosed:", ev.Cause, ev.Code, ev.Reason)
	now, _ := edge.srv.Registry().ByInstance("sip:alice@example.com", "<urn:uuid:3e5b1e5c-8b9f-4f7a-9d4e-2c6f0a1b7d21>", 1)
	fmt.Println("ByInstance finds the new connection:", now == conn2)
	// Output:
	// phone: SIP/2.0 200 OK
	//   Require: outbound
	//   Path: <sip:TOKEN@edge.example.com:443;transport=ws;lr;ob>
	// reconnected phone: SIP/2.0 200 OK
	// first connection replaced: true
	// first connection got close 1000 "Replaced by a new flow"
	// OnClosed: replaced 1000 (normal closure) Replaced by a new flow
	// ByInstance finds the new connection: true
}

// ExampleFlowURI routes an in-dialog request back to a browser phone by its
// flow token (RFC 5626 §5.3): the edge Record-Routes alice's INVITE with a
// URI that holds her connection's token, bob's BYE comes back with that URI
// in its Route, and the token names alice's connection — until it has
// ended, when the edge answers 430 Flow Failed.
func ExampleConn_FlowURI() {
	edge := exrStart()
	defer edge.close()
	alice, _ := edge.dial("sip")
	defer alice.Close()
	bob, bobConn := edge.dial("sip")
	defer bob.Close()

	// alice calls bob. The edge Record-Routes with her flow and forwards the
	// INVITE (straight to bob's connection here; a real edge sends it on to
	// its proxy).
	exrWrite(alice, exrInvite)
	m := edge.next()
	invite := exrParse(m.data).(*sip.Request)
	uri, err := m.conn.FlowURI("edge.example.com", 0, false)
	if err != nil { // the Server has no Config.FlowTokens
		panic(err)
	}
	rr := &sip.RecordRouteHeader{}
	if err := sip.ParseUri(uri, &rr.Address); err != nil {
		panic(err)
	}
	invite.PrependHeader(rr)
	if err := bobConn.Send([]byte(invite.String())); err != nil {
		panic(err)
	}

	// bob's phone keeps the Record-Route as the dialog's route set, and
	// later hangs up.
	got := exrParse(exrRead(bob)).(*sip.Request)
	fmt.Println("bob got INVITE, Record-Route:", exrMask(got.RecordRoute().Value()))
	bye := exrBye(got.RecordRoute().Value())
	exrWrite(bob, bye)

	// The edge's handling of a request with a Route: the token in the top
	// Route names the connection to send it on. FlowStatus turns a failure
	// into the answer: 430 Flow Failed when the connection is gone, 403
	// for a token that is not one of this edge's. (An edge that forwards to
	// other edges would first look for a *sipws.ForeignFlowError and send
	// the request to the node it names.)
	route := func(m exrMsg) {
		req := exrParse(m.data).(*sip.Request)
		token, _ := sipws.FlowTokenFromURI(req.Route().Value())
		conn, err := edge.srv.Registry().ResolveFlow(token)
		if err == nil {
			req.RemoveHeader("Route") // the edge's own Route (RFC 3261 §16.4)
			// Send fails with ErrClosed when the connection is closing.
			err = conn.Send([]byte(req.String()))
		}
		if code, reason := sipws.FlowStatus(err); code != 0 {
			_ = m.conn.Send([]byte(sip.NewResponseFromRequest(req, code, reason, nil).String()))
		}
	}
	route(edge.next())
	fmt.Println("alice got", exrParse(exrRead(alice)).(*sip.Request).StartLine())

	// alice closes the tab before she answers; bob retransmits the BYE.
	_ = alice.Close()
	fmt.Println("alice's connection ended:", edge.nextClosed().Cause)
	exrWrite(bob, bye)
	route(edge.next())
	fmt.Println("bob got", exrParse(exrRead(bob)).(*sip.Response).StartLine())
	// Output:
	// bob got INVITE, Record-Route: <sip:TOKEN@edge.example.com;transport=ws;lr>
	// alice got BYE sip:g5e8jtd7@6l8q1pbr5g1j.invalid;transport=ws SIP/2.0
	// alice's connection ended: peer-lost
	// bob got SIP/2.0 430 Flow Failed
}

// ExampleServer_ResolveFlow routes a response back by flow token. A stateful
// host finds the connection through its server transaction; a stateless edge
// keeps no transaction, so it carries the flow in the Via it adds to each
// request it forwards. The scheme here: the edge's branch is "z9hG4bK", the
// token, "." and a part unique to the request. Tokens are base64url (A–Z a–z
// 0–9 - _), all of them allowed in a branch, and hold no ".". The response
// comes back with the edge's Via on top; the edge takes the token out of the
// branch, pops its Via and sends the rest on the connection the token names.
func ExampleRegistry_ResolveFlow() {
	edge := exrStart()
	defer edge.close()
	alice, aliceConn := edge.dial("sip")
	defer alice.Close()
	bob, _ := edge.dial("sip") // another phone: the response is not for it
	defer bob.Close()

	// alice sends a MESSAGE; the edge adds its Via and forwards it.
	exrWrite(alice, exrMessage)
	m := edge.next()
	req := exrParse(m.data).(*sip.Request)
	via := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "WSS", Host: "edge.example.com", Params: sip.NewParams()}
	aliceToken, err := m.conn.FlowToken()
	if err != nil {
		panic(err)
	}
	via.Params.Add("branch", "z9hG4bK"+aliceToken+".1")
	req.PrependHeader(via)

	// Its proxy answers (in process here); the response comes back as bytes.
	wire := sip.NewResponseFromRequest(req, 200, "OK", nil).String()

	// The edge: the top Via is its own, its branch holds the token.
	res := exrParse([]byte(wire)).(*sip.Response)
	branch, _ := res.Via().Params.Get("branch")
	token, _, _ := strings.Cut(strings.TrimPrefix(branch, "z9hG4bK"), ".")
	conn, err := edge.srv.Registry().ResolveFlow(token)
	if err != nil { // ErrFlowGone: alice has left; drop the response
		panic(err)
	}
	res.RemoveHeader("Via")
	_ = conn.Send([]byte(res.String()))
	fmt.Println("sent on alice's connection:", conn == aliceConn)

	got := exrParse(exrRead(alice)).(*sip.Response)
	fmt.Println("alice got", got.StartLine())
	fmt.Println("  Via:", got.Via().Value())
	// Output:
	// sent on alice's connection: true
	// alice got SIP/2.0 200 OK
	//   Via: SIP/2.0/WSS 6l8q1pbr5g1j.invalid;branch=z9hG4bK2716344
}

// ExampleMSRPURI relays MSRP over WebSocket (RFC 7977, RFC 4976): the relay
// gives alice's msrp connection a URI of its own, maps the URI's session to
// the connection, and sends her a chunk whose To-Path starts with that URI.
// The mapping ends with the connection.
func ExampleMSRPURI() {
	edge := exrStart()
	defer edge.close()
	alice, aliceConn := edge.dial("msrp")
	defer alice.Close()
	bob, _ := edge.dial("msrp")
	defer bob.Close()

	// The relay's URI for alice, which it gives her in the Use-Path of its
	// answer to her AUTH (RFC 4976). A real relay draws the session at
	// random.
	session := "iau39soe2843z"
	uri := sipws.MSRPURI("relay.example.com", 443, session, true)
	fmt.Println("alice's Use-Path:", uri)
	if err := aliceConn.MapMSRPSession(session); err != nil {
		panic(err)
	}

	// bob sends alice a message through the relay.
	exrWrite(bob, "MSRP a786hjs2 SEND\r\n"+
		"To-Path: "+uri+" msrp://df7jal23ls0d.invalid:2855/98cjs;ws\r\n"+
		"From-Path: msrp://kb34m2i7ab0a.invalid:2855/lsk2ns;ws\r\n"+
		"Message-ID: 87652491\r\n"+
		"Byte-Range: 1-25/25\r\n"+
		"Content-Type: text/plain\r\n"+
		"\r\n"+
		"Hey Alice, are you there?\r\n"+
		"-------a786hjs2$\r\n")
	m := edge.next()
	if err := sipws.CheckMessage(sipws.MSRP, m.data); err != nil {
		panic(err)
	}
	s, _ := sipws.MSRPSessionFromURI(exrMSRPHeader(m.data, "To-Path"))
	conn, ok := edge.srv.Registry().ByMSRPSession(s)
	fmt.Printf("To-Path session %s: alice's connection: %v\n", s, ok && conn == aliceConn)
	// A real relay also takes its URI off To-Path and puts it in front of
	// From-Path (RFC 4976) before it forwards the chunk.
	_ = conn.Send(m.data)
	chunk := exrRead(alice)
	fmt.Println("alice got", chunk[:strings.Index(chunk, "\r\n")])

	_ = alice.Close()
	edge.nextClosed()
	_, ok = edge.srv.Registry().ByMSRPSession(s)
	fmt.Println("mapped after alice left:", ok)
	// Output:
	// alice's Use-Path: msrps://relay.example.com:443/iau39soe2843z;ws
	// To-Path session iau39soe2843z: alice's connection: true
	// alice got MSRP a786hjs2 SEND
	// mapped after alice left: false
}

// exrEdge is the edge server of a routing example: a Server with flow
// tokens on an httptest server, whose callbacks hand each new connection,
// message and ended connection to a channel.
type exrEdge struct {
	srv    *sipws.Server
	hs     *httptest.Server
	opened chan *sipws.Conn
	in     chan exrMsg
	closed chan sipws.CloseEvent
}

// exrMsg is a message an exrEdge received, with its connection.
type exrMsg struct {
	conn *sipws.Conn
	data []byte
}

func exrStart() *exrEdge {
	// A real edge signs with 32 random bytes, shared by the nodes that
	// forward to each other.
	tokens, err := sipws.NewFlowTokens("edge1", []byte("example key: use 32 random bytes"))
	if err != nil {
		panic(err)
	}
	e := &exrEdge{
		opened: make(chan *sipws.Conn, 8),
		in:     make(chan exrMsg, 8),
		closed: make(chan sipws.CloseEvent, 8),
	}
	e.srv, err = sipws.New(sipws.Config{
		FlowTokens: tokens,
		OnOpen:     func(c *sipws.Conn) { e.opened <- c },
		OnMessage:  func(c *sipws.Conn, m sipws.Message) { e.in <- exrMsg{c, m.Data} },
		OnClosed: func(ev sipws.CloseEvent) {
			select {
			case e.closed <- ev:
			default: // nobody waits for it
			}
		},
	})
	if err != nil {
		panic(err)
	}
	e.hs = httptest.NewServer(e.srv)
	return e
}

// dial connects a client and returns it with its server-side Conn.
func (e *exrEdge) dial(protocol string) (*exampleClient, *sipws.Conn) {
	c := dialExample(e.hs.URL, protocol)
	select {
	case conn := <-e.opened:
		return c, conn
	case <-time.After(5 * time.Second):
		panic("no OnOpen")
	}
}

// next returns the next message the edge received.
func (e *exrEdge) next() exrMsg {
	select {
	case m := <-e.in:
		return m
	case <-time.After(5 * time.Second):
		panic("no message")
	}
}

// nextClosed returns the next connection that ended.
func (e *exrEdge) nextClosed() sipws.CloseEvent {
	select {
	case ev := <-e.closed:
		return ev
	case <-time.After(5 * time.Second):
		panic("no OnClosed")
	}
}

func (e *exrEdge) close() {
	exampleShutdown(e.srv)
	e.hs.Close()
}

// exrWrite sends a message from a client, as a text frame.
func exrWrite(c *exampleClient, msg string) {
	if err := wsutil.WriteClientText(c, []byte(msg)); err != nil {
		panic(err)
	}
}

// exrRead returns the next message a client receives.
func exrRead(c *exampleClient) string {
	data, _, err := wsutil.ReadServerData(c)
	if err != nil {
		panic(err)
	}
	return string(data)
}

// exrParse checks that data is one SIP message and parses it with sipgo.
func exrParse[T string | []byte](data T) sip.Message {
	if err := sipws.CheckMessage(sipws.SIP, []byte(data)); err != nil {
		panic(err)
	}
	msg, err := sip.ParseMessage([]byte(data))
	if err != nil {
		panic(err)
	}
	return msg
}

// exrMask writes "TOKEN" for the flow token in a URI: tokens change at every
// run.
func exrMask(uri string) string {
	if tok, ok := sipws.FlowTokenFromURI(uri); ok {
		return strings.Replace(uri, tok, "TOKEN", 1)
	}
	return uri
}

// exrMSRPHeader returns the value of an MSRP chunk's header.
func exrMSRPHeader(chunk []byte, name string) string {
	for _, line := range strings.Split(string(chunk), "\r\n")[1:] {
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// exrRegister is alice's REGISTER as JsSIP sends it, with Outbound and GRUU.
func exrRegister(cseq int) string {
	return "REGISTER sip:example.com SIP/2.0\r\n" +
		"Via: SIP/2.0/WSS 6l8q1pbr5g1j.invalid;branch=z9hG4bK" + strconv.Itoa(8364860+cseq) + "\r\n" +
		"Max-Forwards: 69\r\n" +
		"To: <sip:alice@example.com>\r\n" +
		"From: <sip:alice@example.com>;tag=ocsa3hl5n4\r\n" +
		"Call-ID: 2ht6q1qhhqeq4lpocv2jv8\r\n" +
		"CSeq: " + strconv.Itoa(cseq) + " REGISTER\r\n" +
		"Contact: <sip:g5e8jtd7@6l8q1pbr5g1j.invalid;transport=ws>;+sip.ice;reg-id=1;" +
		"+sip.instance=\"<urn:uuid:3e5b1e5c-8b9f-4f7a-9d4e-2c6f0a1b7d21>\";expires=600\r\n" +
		"Expires: 600\r\n" +
		"Allow: INVITE,ACK,CANCEL,BYE,UPDATE,MESSAGE,OPTIONS,REFER,INFO,NOTIFY\r\n" +
		"Supported: path,gruu,outbound\r\n" +
		"User-Agent: JsSIP 3.10.1\r\n" +
		"Content-Length: 0\r\n" +
		"\r\n"
}

// exrInvite is alice's INVITE to bob (without SDP, to keep it short).
const exrInvite = "INVITE sip:bob@example.com SIP/2.0\r\n" +
	"Via: SIP/2.0/WSS 6l8q1pbr5g1j.invalid;branch=z9hG4bK9371502\r\n" +
	"Max-Forwards: 69\r\n" +
	"To: <sip:bob@example.com>\r\n" +
	"From: <sip:alice@example.com>;tag=9kd0t1rnm4\r\n" +
	"Call-ID: p4a2i7lk3ueu9mxo0jhs\r\n" +
	"CSeq: 8211 INVITE\r\n" +
	"Contact: <sip:g5e8jtd7@6l8q1pbr5g1j.invalid;transport=ws;ob>\r\n" +
	"Content-Length: 0\r\n" +
	"\r\n"

// exrBye is bob's BYE to alice's Contact, with the dialog's route set.
func exrBye(route string) string {
	return "BYE sip:g5e8jtd7@6l8q1pbr5g1j.invalid;transport=ws SIP/2.0\r\n" +
		"Via: SIP/2.0/WSS kb34m2i7ab0a.invalid;branch=z9hG4bK4401876\r\n" +
		"Max-Forwards: 69\r\n" +
		"Route: " + route + "\r\n" +
		"To: <sip:alice@example.com>;tag=9kd0t1rnm4\r\n" +
		"From: <sip:bob@example.com>;tag=s8fh3w0q1b\r\n" +
		"Call-ID: p4a2i7lk3ueu9mxo0jhs\r\n" +
		"CSeq: 2 BYE\r\n" +
		"Content-Length: 0\r\n" +
		"\r\n"
}

// exrMessage is alice's MESSAGE to bob.
const exrMessage = "MESSAGE sip:bob@example.com SIP/2.0\r\n" +
	"Via: SIP/2.0/WSS 6l8q1pbr5g1j.invalid;branch=z9hG4bK2716344\r\n" +
	"Max-Forwards: 69\r\n" +
	"To: <sip:bob@example.com>\r\n" +
	"From: <sip:alice@example.com>;tag=u0c2e9mh3l\r\n" +
	"Call-ID: 1s3bqs0n2fgkmp7rhe4q\r\n" +
	"CSeq: 1 MESSAGE\r\n" +
	"Content-Type: text/plain\r\n" +
	"Content-Length: 5\r\n" +
	"\r\n" +
	"Hello"
