package sipws

import (
	"errors"
	"fmt"
	"strings"
)

// ReplacedReason is the close reason of a connection whose registration flow
// was taken over by a new connection of the same instance and reg-id.
const ReplacedReason = "Replaced by a new flow"

// ErrMSRPSessionTaken: the MSRP session id is already mapped to another live
// connection.
var ErrMSRPSessionTaken = errors.New("sipws: MSRP session already mapped to another connection")

// instanceKey names a registration flow (RFC 5626 §6): the UA's
// +sip.instance and its reg-id.
type instanceKey struct {
	instance string
	regID    int
}

// routes are the Registry's routing indexes beyond ID and address, and each
// connection's part in them; all guarded by Registry.routeMu.
type connRoutes struct {
	gone     bool         // the connection has ended; nothing may bind it
	instance *instanceKey // the flow it is bound to, if any
	sessions []string     // MSRP session ids mapped to it
}

// normalizeInstance turns a +sip.instance value as it appears in a Contact
// ("\"<urn:uuid:F81D4FAE-…>\"") into its URN, with a urn:uuid lower-cased
// (UUIDs compare without regard to case, RFC 4122 §3).
func normalizeInstance(s string) string {
	s = strings.TrimSpace(s)
	s = strings.Trim(s, `"`)
	s = strings.TrimSpace(s)
	s = strings.TrimSuffix(strings.TrimPrefix(s, "<"), ">")
	if len(s) >= 9 && strings.EqualFold(s[:9], "urn:uuid:") {
		s = strings.ToLower(s)
	}
	return s
}

// BindInstance binds c to the registration flow of a UA instance (RFC 5626
// §6: the Contact's +sip.instance and reg-id; a UA without Outbound may be
// bound with its instance alone and regID 0). If another live connection was
// bound to the same instance and reg-id — the same phone that reconnected —
// that connection is closed with 1000 "Replaced by a new flow"
// (InitiatorReplaced) and returned, so that no ghost connection holds caps or
// receives requests. Binding c again to another flow moves it. It fails with
// ErrClosed when c has ended and with an error for an empty instance.
func (s *Server) BindInstance(c *Conn, instance string, regID int) (replaced *Conn, err error) {
	inst := normalizeInstance(instance)
	if inst == "" {
		return nil, fmt.Errorf("sipws: bind connection %d: empty +sip.instance", c.id)
	}
	key := instanceKey{inst, regID}
	r := &s.reg
	r.routeMu.Lock()
	if c.routes.gone {
		r.routeMu.Unlock()
		return nil, fmt.Errorf("%w (connection %d)", ErrClosed, c.id)
	}
	if old := c.routes.instance; old != nil && r.instances[*old] == c {
		delete(r.instances, *old)
	}
	if prev := r.instances[key]; prev != nil && prev != c {
		replaced = prev
		prev.routes.instance = nil
	}
	r.instances[key] = c
	c.routes.instance = &key
	r.routeMu.Unlock()
	if replaced != nil {
		s.log.Info("flow replaced", "conn", replaced.id, "remote", replaced.remote, "by", c.id, "instance", inst, "reg_id", regID)
		_ = replaced.startClose(InitiatorReplaced, CloseNormal, ReplacedReason, nil)
	}
	return replaced, nil
}

// ByInstance returns the live connection bound to the flow of instance and
// regID by BindInstance.
func (r *Registry) ByInstance(instance string, regID int) (*Conn, bool) {
	r.routeMu.RLock()
	c, ok := r.instances[instanceKey{normalizeInstance(instance), regID}]
	r.routeMu.RUnlock()
	return c, ok
}

// MapMSRPSession records that the MSRP session id (the session part of an
// MSRP URI the relay created for c with MSRPURI) belongs to c, so that
// ByMSRPSession finds c from the To-Path of a chunk (RFC 7977, RFC 4976). The
// mapping ends with the connection. Mapping a session already mapped to
// another live connection fails with ErrMSRPSessionTaken.
func (s *Server) MapMSRPSession(c *Conn, session string) error {
	if session == "" {
		return fmt.Errorf("sipws: map MSRP session on connection %d: empty session id", c.id)
	}
	r := &s.reg
	r.routeMu.Lock()
	defer r.routeMu.Unlock()
	if c.routes.gone {
		return fmt.Errorf("%w (connection %d)", ErrClosed, c.id)
	}
	switch prev := r.sessions[session]; prev {
	case c:
		return nil
	case nil:
	default:
		return fmt.Errorf("%w: %q (connection %d)", ErrMSRPSessionTaken, session, prev.id)
	}
	r.sessions[session] = c
	c.routes.sessions = append(c.routes.sessions, session)
	return nil
}

// UnmapMSRPSession removes a session mapped by MapMSRPSession (when the MSRP
// session ends before the connection does).
func (s *Server) UnmapMSRPSession(session string) {
	r := &s.reg
	r.routeMu.Lock()
	defer r.routeMu.Unlock()
	c := r.sessions[session]
	if c == nil {
		return
	}
	delete(r.sessions, session)
	for i, v := range c.routes.sessions {
		if v == session {
			c.routes.sessions = append(c.routes.sessions[:i], c.routes.sessions[i+1:]...)
			break
		}
	}
}

// ByMSRPSession returns the live connection an MSRP session id is mapped to.
func (r *Registry) ByMSRPSession(session string) (*Conn, bool) {
	r.routeMu.RLock()
	c, ok := r.sessions[session]
	r.routeMu.RUnlock()
	return c, ok
}

// unroute drops an ended connection from the routing indexes.
func (r *Registry) unroute(c *Conn) {
	r.routeMu.Lock()
	c.routes.gone = true
	if k := c.routes.instance; k != nil && r.instances[*k] == c {
		delete(r.instances, *k)
	}
	for _, sess := range c.routes.sessions {
		if r.sessions[sess] == c {
			delete(r.sessions, sess)
		}
	}
	c.routes = connRoutes{gone: true}
	r.routeMu.Unlock()
}
