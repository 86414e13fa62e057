package sipws

import (
	"errors"
	"fmt"
)

// ErrFlowGone: the flow token is valid and names a connection of this
// server that has ended. A proxy answers 430 Flow Failed (RFC 5626 §5.3), and
// the UA registers a new flow.
var ErrFlowGone = errors.New("sipws: flow token's connection has ended")

// ErrNoFlowTokens: Config.FlowTokens is not set.
var ErrNoFlowTokens = errors.New("sipws: no flow tokens configured")

// FlowToken returns the RFC 5626 flow token that names this connection on
// this server (see FlowTokens, FlowURI), or "" when Config.FlowTokens is not
// set. Put it in the user part of a Path or Record-Route URI
// (FlowURI) and get the connection back with Server.ResolveFlow.
func (c *Conn) FlowToken() string {
	f := c.srv.flows.Load()
	if f == nil {
		return ""
	}
	return f.Token(c.id)
}

// ResolveFlow returns the live connection a flow token names. It fails with
// an error wrapping ErrFlowGone when the token is valid but its connection
// has ended or is closing (answer 430 Flow Failed); ErrFlowInvalid for a tampered or forged
// token; ErrFlowForeign for a token of another edge node (a *ForeignFlowError
// naming it, so a host may forward there); ErrFlowStale for a token of this
// node from before a restart (430 too); ErrNoFlowTokens without
// Config.FlowTokens.
func (s *Server) ResolveFlow(token string) (*Conn, error) {
	f := s.flows.Load()
	if f == nil {
		return nil, ErrNoFlowTokens
	}
	id, err := f.Parse(token)
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
// The node name and the run's nonce stay, so existing tokens of live
// connections keep working. It fails with ErrNoFlowTokens when
// Config.FlowTokens was not set, or for a key that is too short.
func (s *Server) SetFlowKeys(key []byte, previous ...[]byte) error {
	f := s.flows.Load()
	if f == nil {
		return ErrNoFlowTokens
	}
	nf, err := f.WithKeys(key, previous...)
	if err != nil {
		return err
	}
	s.flows.Store(nf)
	return nil
}
