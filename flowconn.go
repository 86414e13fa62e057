package sipws

import (
	"errors"
	"fmt"
)

// ErrFlowGone: the flow token is valid and names a connection of this
// server that has ended. A proxy answers 430 Flow Failed (RFC 5626 §5.3), and
// the UA registers a new flow.
var ErrFlowGone = errors.New("sipws: flow token's connection has ended")

// errNoFlowTokens: Config.FlowTokens is not set, so the server neither
// issues nor resolves flow tokens.
var errNoFlowTokens = errors.New("sipws: no flow tokens configured")

// FlowToken returns the RFC 5626 flow token that names this connection of
// its Server (see FlowTokens): put it in the user part of a Path or
// Record-Route URI (Conn.FlowURI builds it) and get the connection back
// with Registry.ResolveFlow. The token holds the node's name, a random nonce of
// this Server's lifetime and the connection ID, under an HMAC. It fails
// (FlowStatus: 500) when Config.FlowTokens is not set, so that a Path or
// Record-Route without a token is never built by mistake.
func (c *Conn) FlowToken() (string, error) {
	f := c.srv.flows.Load()
	if f == nil {
		return "", fmt.Errorf("%w (connection %d)", errNoFlowTokens, c.id)
	}
	return f.token(c.srv.flowRun, c.id), nil
}

// ResolveFlow returns the live connection of r's Server that a flow token
// (from Conn.FlowToken) names. It fails with an error wrapping
// ErrFlowGone when the token is valid but its connection has ended or is
// closing; ErrFlowInvalid for a malformed, tampered or forged token;
// ErrFlowForeign for a token of another edge node (a *ForeignFlowError
// naming it, so a host may forward there); ErrFlowStale for a token of this
// node issued by another Server (before a restart or before Shutdown and
// New, or another Server sharing the FlowTokens) — never the connection of
// this Server that has the same ID; and an error FlowStatus maps to 500
// without Config.FlowTokens. FlowStatus gives the SIP status to answer for each.
func (r *Registry) ResolveFlow(token string) (*Conn, error) {
	s := r.srv
	f := s.flows.Load()
	if f == nil {
		return nil, errNoFlowTokens
	}
	id, err := f.parse(s.flowRun, token)
	if err != nil {
		return nil, err
	}
	c, ok := s.reg.Get(id)
	if !ok || !c.isOpen() {
		return nil, fmt.Errorf("%w (connection %d)", ErrFlowGone, id)
	}
	return c, nil
}

// SetFlowKeys rotates the flow token keys at run time: tokens are signed
// with key from now on, and those signed with any of previous still resolve.
// The node name and the Server's lifetime nonce stay, so existing tokens of
// live connections keep working, and tokens of other Servers stay
// ErrFlowStale. It fails when Config.FlowTokens was not set, or for a key that
// is too short. Config.FlowTokens itself is not
// changed.
func (s *Server) SetFlowKeys(key []byte, previous ...[]byte) error {
	f := s.flows.Load()
	if f == nil {
		return errNoFlowTokens
	}
	nf, err := f.withKeys(key, previous...)
	if err != nil {
		return err
	}
	s.flows.Store(nf)
	return nil
}

// FlowStatus returns the SIP status code and reason phrase an edge answers
// a request with when routing it by flow token failed with err (from
// Registry.ResolveFlow, or from Conn.Send on the connection it returned):
//
//   - 0, "" for nil: nothing failed, the request went on.
//   - 430 Flow Failed (RFC 5626 §5.3) for ErrFlowGone, ErrFlowStale,
//     ErrClosed and ErrSendQueueFull: the flow is gone — its connection has
//     ended or is closing, or the token was issued by another Server of
//     this node (an earlier run) — and the UA registers a new flow.
//   - 403 Forbidden for ErrFlowInvalid: a forged, tampered or retired
//     token, which names no flow.
//   - 403 Forbidden for ErrFlowForeign too. A token of another edge node is
//     genuine, and a node that can reach its peers forwards the request to
//     the node the *ForeignFlowError names instead of answering: test for
//     it with errors.As before calling FlowStatus. A node that cannot
//     forward refuses it like a token it does not know.
//   - 513 Message Too Large for ErrMessageTooBig: the request is over
//     Config.MaxMessageSize.
//   - 500 Server Internal Error for anything else, the error of a
//     Server without Config.FlowTokens included.
func FlowStatus(err error) (code int, reason string) {
	switch {
	case err == nil:
		return 0, ""
	case errors.Is(err, ErrFlowGone), errors.Is(err, ErrFlowStale),
		errors.Is(err, ErrClosed), errors.Is(err, ErrSendQueueFull):
		return 430, "Flow Failed" // RFC 5626 §11.5
	case errors.Is(err, ErrFlowInvalid), errors.Is(err, ErrFlowForeign):
		return 403, "Forbidden" // RFC 3261 §21.4.4
	case errors.Is(err, ErrMessageTooBig):
		return 513, "Message Too Large" // RFC 3261 §21.5.14
	}
	return 500, "Server Internal Error" // RFC 3261 §21.5.1
}

// FlowURI returns the SIP URI an edge node puts in Path (RFC 3327) or
// Record-Route for this connection's flow:
// "sip:TOKEN@HOST:PORT;transport=ws;lr" with FlowToken's token, and ";ob" when outbound is true (RFC 5626 §5.1).
// An IPv6 host is put in brackets; a port of 0 or less is left out. It fails
// as FlowToken does.
func (c *Conn) FlowURI(host string, port int, outbound bool) (string, error) {
	tok, err := c.FlowToken()
	if err != nil {
		return "", err
	}
	return flowURI(tok, host, port, outbound), nil
}
