package sipws

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// replacedReason is the close reason of a connection whose registration flow
// was taken over by a new connection of the same AOR, instance and reg-id.
const replacedReason = "Replaced by a new flow"

// ErrMSRPSessionTaken: the MSRP session id is already mapped to another live
// connection.
var ErrMSRPSessionTaken = errors.New("sipws: MSRP session already mapped to another connection")

// Bounds on what BindInstance keeps for a connection: a peer cannot make it
// grow past them, whatever it registers.
const (
	maxFlowsPerConn = 16  // flows (AORs) one connection may be bound to
	maxFlowKeyLen   = 256 // bytes of a normalised AOR, and of a +sip.instance
)

// instanceKey names a registration flow (RFC 5626 §6): the registered AOR,
// the UA's +sip.instance and its reg-id, each normalised.
type instanceKey struct {
	aor      string
	instance string
	regID    int
}

// routes are the Registry's routing indexes beyond ID and address, and each
// connection's part in them; all guarded by Registry.routeMu.
type connRoutes struct {
	gone     bool          // the connection has ended; nothing may bind it
	flows    []instanceKey // the flows it is bound to, at most one per AOR
	sessions []string      // MSRP session ids mapped to it
}

// normalizeInstance turns a +sip.instance value as it appears in a Contact
// ("\"<urn:uuid:F81D4FAE-…>\"") into its URN: white space, double quotes and
// a pair of angle brackets around it are dropped, as often as they appear;
// "urn:" and the namespace are lower-cased (RFC 8141 §3.1), and so is the
// whole of a urn:uuid (UUIDs compare without regard to case, RFC 4122 §3).
// The rest of another URN is kept as it is.
func normalizeInstance(s string) string {
	for {
		t := strings.Trim(strings.TrimSpace(s), `"`)
		t = strings.TrimSpace(t)
		if len(t) >= 2 && t[0] == '<' && t[len(t)-1] == '>' {
			t = t[1 : len(t)-1]
		}
		if t == s {
			break
		}
		s = t
	}
	if len(s) >= 4 && strings.EqualFold(s[:4], "urn:") {
		nid, nss, ok := strings.Cut(s[4:], ":")
		nid = strings.ToLower(nid)
		if nid == "uuid" {
			nss = strings.ToLower(nss)
		}
		s = "urn:" + nid
		if ok {
			s += ":" + nss
		}
	}
	return s
}

// normalizeAOR returns the canonical form of an address-of-record (RFC 3261
// §10.3 step 5, compared as §19.1.4): "sip:" or "sips:", the user and
// password as they are with escapes decoded (and characters that must be
// escaped escaped again, with upper-case hex), "@", the host lower-cased, and
// the port when there is one. Display name, angle brackets, header
// parameters, URI parameters and URI headers are dropped.
func normalizeAOR(s string) (string, error) {
	uri := strings.TrimSpace(s)
	if strings.IndexByte(uri, '<') >= 0 {
		var ok bool
		if uri, ok = firstAddr(uri); !ok {
			return "", errors.New("no URI")
		}
	} else if strings.ContainsAny(uri, " \t\r\n,") {
		return "", errors.New("white space or comma in an addr-spec")
	}
	var sb strings.Builder
	switch {
	case len(uri) >= 4 && strings.EqualFold(uri[:4], "sip:"):
		sb.WriteString("sip:")
		uri = uri[4:]
	case len(uri) >= 5 && strings.EqualFold(uri[:5], "sips:"):
		sb.WriteString("sips:")
		uri = uri[5:]
	default:
		return "", errors.New("not a sip or sips URI")
	}
	// "@" may appear only between userinfo and host: not in the user,
	// password, parameters or headers (RFC 3261 §25.1).
	if at := strings.IndexByte(uri, '@'); at >= 0 {
		user, password, hasPassword := strings.Cut(uri[:at], ":")
		if user == "" {
			return "", errors.New("empty user part")
		}
		if err := appendCanonEscapes(&sb, user, isUserChar); err != nil {
			return "", fmt.Errorf("user part: %w", err)
		}
		if hasPassword {
			sb.WriteByte(':')
			if err := appendCanonEscapes(&sb, password, isPasswordChar); err != nil {
				return "", fmt.Errorf("password: %w", err)
			}
		}
		sb.WriteByte('@')
		uri = uri[at+1:]
	}
	if i := strings.IndexAny(uri, ";?"); i >= 0 {
		uri = uri[:i] // URI parameters and headers
	}
	host, port := uri, ""
	if strings.HasPrefix(uri, "[") {
		end := strings.IndexByte(uri, ']')
		if end < 3 || strings.Trim(uri[1:end], "0123456789abcdefABCDEF:.") != "" {
			return "", errors.New("bad IPv6 reference")
		}
		host, port = uri[:end+1], uri[end+1:]
	} else {
		if i := strings.IndexByte(uri, ':'); i >= 0 {
			host, port = uri[:i], uri[i:]
		}
		if host == "" || strings.Trim(host, "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-.") != "" {
			return "", errors.New("bad host")
		}
	}
	sb.WriteString(strings.ToLower(host))
	if port != "" {
		n, err := strconv.Atoi(port[1:])
		if port[0] != ':' || len(port) > 6 || strings.Trim(port[1:], "0123456789") != "" || err != nil || n > 65535 {
			return "", errors.New("bad port")
		}
		sb.WriteByte(':')
		sb.WriteString(strconv.Itoa(n))
	}
	return sb.String(), nil
}

// isUserChar reports whether c may stand unescaped in the user part of a SIP
// URI: unreserved or user-unreserved (RFC 3261 §25.1).
func isUserChar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("-_.!~*'()&=+$,;?/", c) >= 0
}

// isPasswordChar reports whether c may stand unescaped in the password of a
// SIP URI (RFC 3261 §25.1).
func isPasswordChar(c byte) bool {
	return isAlpha(c) || isDigit(c) || strings.IndexByte("-_.!~*'()&=+$,", c) >= 0
}

// appendCanonEscapes appends s to sb with its escapes decoded and every byte
// that allowed does not accept escaped again (%XX, upper-case hex), so that
// two spellings of one value (a and %61, %3a and %3A) are one string. A byte
// that is neither allowed nor escaped, or a bad escape, is an error.
func appendCanonEscapes(sb *strings.Builder, s string, allowed func(byte) bool) error {
	const hex = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHexDigit(s[i+1]) || !isHexDigit(s[i+2]) {
				return errors.New("bad escape")
			}
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
		} else if !allowed(c) {
			return fmt.Errorf("character %q", c)
		}
		if allowed(c) {
			sb.WriteByte(c)
		} else {
			sb.WriteByte('%')
			sb.WriteByte(hex[c>>4])
			sb.WriteByte(hex[c&0xf])
		}
	}
	return nil
}

func isHexDigit(c byte) bool { return isDigit(c) || (c|0x20 >= 'a' && c|0x20 <= 'f') }

func unhex(c byte) byte {
	if isDigit(c) {
		return c - '0'
	}
	return (c | 0x20) - 'a' + 10
}

// flowKey normalises the arguments of BindInstance, UnbindInstance and
// ByInstance.
func flowKey(aor, instance string, regID int) (instanceKey, error) {
	a, err := normalizeAOR(aor)
	if err != nil {
		return instanceKey{}, fmt.Errorf("AOR %s: %w", strconv.Quote(aor), err)
	}
	inst := normalizeInstance(instance)
	switch {
	case len(a) > maxFlowKeyLen:
		return instanceKey{}, fmt.Errorf("AOR is %d bytes, the limit is %d", len(a), maxFlowKeyLen)
	case inst == "":
		return instanceKey{}, errors.New("empty +sip.instance")
	case len(inst) > maxFlowKeyLen:
		return instanceKey{}, fmt.Errorf("+sip.instance is %d bytes, the limit is %d", len(inst), maxFlowKeyLen)
	case regID < 0:
		return instanceKey{}, fmt.Errorf("negative reg-id %d", regID)
	}
	return instanceKey{a, inst, regID}, nil
}

// BindInstance binds c to a registration flow (RFC 5626 §6): the flow of the
// address-of-record aor, registered by the UA instance instance (the
// Contact's +sip.instance) with reg-id regID (a UA without Outbound may be
// bound with its instance alone and regID 0). Call it when the REGISTER that
// came on c has been authenticated for aor. If another live connection was
// bound to the same AOR, instance and reg-id — the same phone, reconnected —
// that connection is closed with 1000 "Replaced by a new flow"
// (CauseReplaced) and returned, so that no ghost connection holds caps or
// receives requests. A binding for another AOR never replaces anything, even
// with the same instance and reg-id: nobody can take another user's flow by
// copying a +sip.instance. c may be bound to the flows of up to 16 AORs (a UA
// registering several AORs on one connection); binding it again for an AOR
// it is already bound to, with another instance or reg-id, moves that flow.
// Every binding ends with the connection, or with UnbindInstance.
//
// The arguments are normalised before they are compared; ByInstance and
// UnbindInstance take them in any of the forms BindInstance accepts:
//
//   - aor is the AOR the REGISTER's To header names, as a SIP or SIPS URI
//     alone or as a header value ("Alice" <sip:alice@example.com>;tag=x). It
//     is put in RFC 3261's canonical form (§10.3 step 5) and compared as
//     §19.1.4 says: the display name, angle brackets and header parameters
//     go, and so do all URI parameters (user=phone included) and URI
//     headers; the scheme and host are lower-cased; the user part (and a
//     password) keep their case, with escapes decoded where the character
//     needs none (%61lice is alice; %20 stays, as %20);
//     the port stays when there is one, so sip:alice@example.com and
//     sip:alice@example.com:5060 are different AORs, and a sips AOR is never
//     a sip one.
//   - instance is the +sip.instance parameter as it appears in the Contact,
//     quotes and angle brackets included (RFC 5626 §4.1:
//     +sip.instance="<urn:uuid:…>"): surrounding white space, double quotes
//     and a pair of angle brackets are dropped; "urn:" and the namespace are
//     lower-cased (RFC 8141), and so is a whole urn:uuid, because UUIDs
//     compare without regard to case (RFC 4122 §3) and UAs differ in the
//     case they write them in; the rest of another URN is kept as it is.
//   - regID is the Contact's reg-id: 1 to 2³¹−1, or 0 for none.
//
// It fails with ErrClosed when c has ended; with an error when c belongs to
// another Server, when the AOR is not a SIP or SIPS URI, when the
// +sip.instance is empty, when either is over 256 bytes once normalised, for
// a negative regID, and when c is already bound for 16 other AORs.
func (c *Conn) BindInstance(aor, instance string, regID int) (replaced *Conn, err error) {
	s := c.srv
	key, err := flowKey(aor, instance, regID)
	if err != nil {
		return nil, fmt.Errorf("sipws: bind connection %d: %w", c.id, err)
	}
	r := &s.reg
	r.routeMu.Lock()
	if c.routes.gone {
		r.routeMu.Unlock()
		return nil, fmt.Errorf("%w (connection %d)", ErrClosed, c.id)
	}
	i := slices.IndexFunc(c.routes.flows, func(k instanceKey) bool { return k.aor == key.aor })
	switch {
	case i >= 0 && c.routes.flows[i] == key:
		r.routeMu.Unlock()
		return nil, nil // bound already
	case i < 0 && len(c.routes.flows) >= maxFlowsPerConn:
		r.routeMu.Unlock()
		return nil, fmt.Errorf("sipws: bind connection %d: already bound to the flows of %d AORs, the limit", c.id, maxFlowsPerConn)
	}
	if prev := r.instances[key]; prev != nil {
		// prev != c: c is not bound to key (checked above).
		replaced = prev
		prev.routes.flows = slices.DeleteFunc(prev.routes.flows, func(k instanceKey) bool { return k == key })
	}
	if i >= 0 {
		if old := c.routes.flows[i]; r.instances[old] == c {
			delete(r.instances, old)
		}
		c.routes.flows[i] = key
	} else {
		c.routes.flows = append(c.routes.flows, key)
	}
	r.instances[key] = c
	r.routeMu.Unlock()
	if replaced != nil {
		s.log.Info("flow replaced", "conn", replaced.id, "remote", replaced.remote, "by", c.id, "aor", key.aor, "instance", key.instance, "reg_id", regID)
		_ = replaced.startClose(CauseReplaced, CloseNormal, replacedReason, nil)
	}
	return replaced, nil
}

// UnbindInstance ends the binding of c to the flow of aor, instance and
// regID made by BindInstance (when the UA unregisters that Contact, or its
// registration expires), normalising the arguments the same way. It does
// nothing when c is not bound to that flow — in particular when another
// connection has taken it over since. The connection stays open.
func (c *Conn) UnbindInstance(aor, instance string, regID int) {
	key, err := flowKey(aor, instance, regID)
	if err != nil {
		return
	}
	r := &c.srv.reg
	r.routeMu.Lock()
	defer r.routeMu.Unlock()
	if r.instances[key] != c {
		return
	}
	delete(r.instances, key)
	c.routes.flows = slices.DeleteFunc(c.routes.flows, func(k instanceKey) bool { return k == key })
}

// ByInstance returns the live connection bound by BindInstance to the flow
// of aor, instance and regID, which it normalises as BindInstance does.
func (r *Registry) ByInstance(aor, instance string, regID int) (*Conn, bool) {
	key, err := flowKey(aor, instance, regID)
	if err != nil {
		return nil, false
	}
	r.routeMu.RLock()
	c, ok := r.instances[key]
	r.routeMu.RUnlock()
	return c, ok
}

// MapMSRPSession records that the MSRP session id (the session part of an
// MSRP URI the relay created for c with MSRPURI) belongs to c, so that
// ByMSRPSession finds c from the To-Path of a chunk (RFC 7977, RFC 4976). The
// mapping ends with the connection. Mapping a session already mapped to
// another live connection fails with ErrMSRPSessionTaken.
func (c *Conn) MapMSRPSession(session string) error {
	s := c.srv
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
func (c *Conn) UnmapMSRPSession(session string) {
	r := &c.srv.reg
	r.routeMu.Lock()
	defer r.routeMu.Unlock()
	if r.sessions[session] != c {
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
	for _, k := range c.routes.flows {
		if r.instances[k] == c {
			delete(r.instances, k)
		}
	}
	for _, sess := range c.routes.sessions {
		if r.sessions[sess] == c {
			delete(r.sessions, sess)
		}
	}
	c.routes = connRoutes{gone: true}
	r.routeMu.Unlock()
}
