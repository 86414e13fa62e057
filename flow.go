package sipws

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// This file builds and checks RFC 5626 §5.2 flow tokens, and the SIP and MSRP
// URIs that carry a connection's identity through Path, Record-Route and
// To-Path. Everything here is pure: strings in, strings out.

// Errors of Registry.ResolveFlow for a token that names no connection of this
// Server. Test for them with errors.Is: they are wrapped with detail.
// FlowStatus maps each to the SIP status to answer.
var (
	// ErrFlowInvalid: the token is malformed, or its MAC matches none of the
	// keys — it was tampered with, forged, or signed with a key that has
	// been retired. The host should treat the request as if it carried no
	// token (typically 403 or 404).
	ErrFlowInvalid = errors.New("sipws: invalid flow token")
	// ErrFlowForeign: the token is well formed and signed with one of our
	// keys, but names another edge node; the error is a *ForeignFlowError
	// that carries that node's name, so the host may forward the request
	// there.
	ErrFlowForeign = errors.New("sipws: flow token of another edge node")
	// ErrFlowStale: the token names this node but was issued by another
	// Server: one that ran before this one (before a restart, or before
	// Shutdown and New), when connection IDs started again at 1, or another
	// Server that shares this node's FlowTokens. Its flow is not one of this
	// Server's (RFC 5626 §5.3: 430 Flow Failed).
	ErrFlowStale = errors.New("sipws: flow token of another server run")
)

// ForeignFlowError is the error Registry.ResolveFlow returns for a valid token
// issued by another edge node that shares our keys. It unwraps to
// ErrFlowForeign.
type ForeignFlowError struct {
	// Node is the name of the node that issued the token. The MAC covers it,
	// so it can be trusted as far as the shared keys can.
	Node string
}

// Error implements error.
func (e *ForeignFlowError) Error() string {
	return "sipws: flow token of edge node " + strconv.Quote(e.Node)
}

// Unwrap returns ErrFlowForeign.
func (e *ForeignFlowError) Unwrap() error { return ErrFlowForeign }

// Flow token layout, before base64url encoding:
//
//	version (1) | len(node) (1) | node (1–32) | server run (8) |
//	connection ID (uvarint, 1–10) | HMAC-SHA256 (first 12 bytes)
//
// The server run is the random flowRun of the Server that issued the token.
// The MAC is computed over flowMACContext followed by every byte before it.
const (
	flowVersion    = 1
	flowNonceLen   = 8
	flowMACLen     = 12
	flowMaxNode    = 32
	flowMinKey     = 16
	flowMinRaw     = 2 + 1 + flowNonceLen + 1 + flowMACLen
	flowMaxRaw     = 2 + flowMaxNode + flowNonceLen + binary.MaxVarintLen64 + flowMACLen
	flowMaxEncoded = (flowMaxRaw*8 + 5) / 6
)

// flowMACContext separates flow-token MACs from anything else a host might
// sign with the same key.
var flowMACContext = []byte("sipws flow token\x00")

// flowB64 is base64url without padding, strict about the unused bits of the
// last character so that every token has exactly one spelling.
var flowB64 = base64.RawURLEncoding.Strict()

// flowRun is the random nonce of one Server's lifetime, drawn in New and put
// in every flow token the Server issues. Connection IDs start at 1 in every
// Server, so the run is what keeps a token of another Server — an earlier
// one, or another one sharing the same FlowTokens — from naming a connection
// of this one.
type flowRun [flowNonceLen]byte

// newFlowRun draws a flowRun. crypto/rand.Read never fails.
func newFlowRun() flowRun {
	var r flowRun
	_, _ = rand.Read(r[:])
	return r
}

// FlowTokens holds the name and the keys with which an edge node makes and
// checks RFC 5626 §5.2 flow tokens: opaque strings, URL-safe so that they fit
// the user part of a SIP URI, that name this node, the Server that issued
// them and one of its connections, and that cannot be forged without the
// key. Give it to a Server as Config.FlowTokens; the Server issues tokens
// (Conn.FlowToken) and resolves them (Registry.ResolveFlow). A FlowTokens is
// immutable and safe for concurrent use.
//
// Each Server puts a random nonce of its own lifetime in its tokens, so a
// FlowTokens may be reused after Shutdown and New, or shared by several
// Servers: a token of another Server never resolves to a connection of this
// one, even one with the same connection ID, and is reported as ErrFlowStale.
// Serve all the listeners of one node from one Server (it is an
// http.Handler) so that its tokens resolve whichever listener a request
// comes back on.
type FlowTokens struct {
	node string
	keys [][]byte // keys[0] signs; all of them verify
}

// NewFlowTokens returns the FlowTokens of the edge node named node (1–32 bytes
// of A–Z a–z 0–9 . - _), which signs with key and also accepts tokens signed
// with any of the previous keys, so that keys can be rotated without breaking
// the flows of registered clients: add the new key as key and the old one to
// previous (with Server.SetFlowKeys in a running Server), and drop the old
// one once the registrations made before the rotation have expired. After a
// restart, keeping the old key in previous makes ResolveFlow report the old
// tokens as ErrFlowStale (answer 430, the client registers again) rather
// than ErrFlowInvalid. Every key must be at least 16 bytes (32 random bytes
// are right for HMAC-SHA256); the keys are copied. Nodes that may forward
// requests to each other share their keys, so that a token of one of them is
// recognised by the others (ErrFlowForeign) rather than rejected as invalid.
func NewFlowTokens(node string, key []byte, previous ...[]byte) (*FlowTokens, error) {
	if !validFlowNode(node) {
		return nil, fmt.Errorf("sipws: flow tokens: node name %s must be 1–%d bytes of A–Z a–z 0–9 . - _", strconv.Quote(node), flowMaxNode)
	}
	f := &FlowTokens{node: node, keys: make([][]byte, 0, 1+len(previous))}
	for i, k := range append([][]byte{key}, previous...) {
		if len(k) < flowMinKey {
			which := "key"
			if i > 0 {
				which = fmt.Sprintf("previous key %d", i)
			}
			return nil, fmt.Errorf("sipws: flow tokens: %s is %d bytes, want at least %d", which, len(k), flowMinKey)
		}
		f.keys = append(f.keys, append([]byte(nil), k...))
	}
	return f, nil
}

// withKeys returns a FlowTokens for the same node as f with other keys.
func (f *FlowTokens) withKeys(key []byte, previous ...[]byte) (*FlowTokens, error) {
	return NewFlowTokens(f.node, key, previous...)
}

func validFlowNode(node string) bool {
	if len(node) == 0 || len(node) > flowMaxNode {
		return false
	}
	for i := range len(node) {
		c := node[i]
		if !isAlpha(c) && !isDigit(c) && c != '.' && c != '-' && c != '_' {
			return false
		}
	}
	return true
}

// Node returns the name of this edge node.
func (f *FlowTokens) Node() string { return f.node }

// token returns the flow token of connection id of the Server whose run is
// run, on this node, signed with the current key. The token is base64url
// without padding: letters, digits, "-" and "_", all of which RFC 3261
// allows unescaped in the user part of a SIP URI. It is about 38 characters
// for a 5-byte node name and a small ID: the node name and the ID add 4
// characters per 3 bytes.
func (f *FlowTokens) token(run flowRun, id ConnID) string {
	var raw [flowMaxRaw]byte
	b := append(raw[:0], flowVersion, byte(len(f.node)))
	b = append(b, f.node...)
	b = append(b, run[:]...)
	b = binary.AppendUvarint(b, uint64(id))
	mac := flowMAC(f.keys[0], b)
	b = append(b, mac[:flowMACLen]...)
	return flowB64.EncodeToString(b)
}

func flowMAC(key, data []byte) [sha256.Size]byte {
	h := hmac.New(sha256.New, key)
	h.Write(flowMACContext)
	h.Write(data)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// parse returns the connection ID in a token made by token on this node for
// the Server whose run is run, checking its MAC against the current key and
// then each previous key, in constant time. It fails with an error wrapping
// ErrFlowInvalid for a malformed, tampered or forged token, ErrFlowForeign (a
// *ForeignFlowError) for a valid token of another node, and ErrFlowStale for
// a token of this node issued by another Server (another run). The ID need
// not belong to a live connection: the caller looks it up in the Server's
// Registry — the Registry of the Server whose run it passed, and no other.
func (f *FlowTokens) parse(run flowRun, token string) (ConnID, error) {
	if len(token) < (flowMinRaw*8+5)/6 || len(token) > flowMaxEncoded {
		return 0, fmt.Errorf("%w: %d characters", ErrFlowInvalid, len(token))
	}
	for i := range len(token) {
		if !isFlowChar(token[i]) {
			return 0, fmt.Errorf("%w: character %q is not base64url", ErrFlowInvalid, token[i])
		}
	}
	var raw [flowMaxRaw + 3]byte
	n, err := flowB64.Decode(raw[:], []byte(token))
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrFlowInvalid, err)
	}
	b := raw[:n]
	if len(b) < flowMinRaw {
		return 0, fmt.Errorf("%w: too short", ErrFlowInvalid)
	}
	if b[0] != flowVersion {
		return 0, fmt.Errorf("%w: unknown version %d", ErrFlowInvalid, b[0])
	}
	nodeLen := int(b[1])
	if nodeLen < 1 || nodeLen > flowMaxNode || len(b) < flowMinRaw-1+nodeLen {
		return 0, fmt.Errorf("%w: bad node length", ErrFlowInvalid)
	}
	body, mac := b[:len(b)-flowMACLen], b[len(b)-flowMACLen:]
	node := body[2 : 2+nodeLen]
	nonce := body[2+nodeLen : 2+nodeLen+flowNonceLen]
	idBytes := body[2+nodeLen+flowNonceLen:]
	id, used := binary.Uvarint(idBytes)
	if used <= 0 || used != len(idBytes) || (used > 1 && idBytes[used-1] == 0) {
		return 0, fmt.Errorf("%w: bad connection ID", ErrFlowInvalid)
	}
	ok := false
	for _, k := range f.keys {
		sum := flowMAC(k, body)
		if hmac.Equal(sum[:flowMACLen], mac) {
			ok = true
			break
		}
	}
	if !ok {
		return 0, fmt.Errorf("%w: MAC mismatch", ErrFlowInvalid)
	}
	if string(node) != f.node {
		if !validFlowNode(string(node)) {
			return 0, fmt.Errorf("%w: bad node name", ErrFlowInvalid)
		}
		return 0, &ForeignFlowError{Node: string(node)}
	}
	if flowRun(nonce) != run {
		return 0, fmt.Errorf("%w: node %s, connection %d", ErrFlowStale, strconv.Quote(f.node), id)
	}
	return ConnID(id), nil
}

// isFlowChar reports whether c is in the base64url alphabet.
func isFlowChar(c byte) bool { return isAlpha(c) || isDigit(c) || c == '-' || c == '_' }

// flowURI returns the SIP URI an edge node puts in Path (RFC 3327) or
// Record-Route for a flow: "sip:TOKEN@HOST:PORT;transport=ws;lr", with ";ob"
// appended when outbound is true (the client registered with RFC 5626
// Outbound, §5.1). transport=ws is right for wss too: RFC 7118 §5.2 defines
// no transport=wss. An IPv6 host is put in brackets; a port of 0 or less is
// left out; an empty token gives "sip:HOST…" without a user part, a URI that
// names no flow. token and host are not escaped: pass a token from
// Conn.FlowToken (which fails, rather than giving "", on a Server without
// Config.FlowTokens) and a host name or IP address.
func flowURI(token, host string, port int, outbound bool) string {
	var sb strings.Builder
	sb.Grow(len("sip:@:65535;transport=ws;lr;ob[]") + len(token) + len(host))
	sb.WriteString("sip:")
	if token != "" {
		sb.WriteString(token)
		sb.WriteByte('@')
	}
	writeHostPort(&sb, host, port)
	sb.WriteString(";transport=ws;lr")
	if outbound {
		sb.WriteString(";ob")
	}
	return sb.String()
}

func writeHostPort(sb *strings.Builder, host string, port int) {
	if strings.IndexByte(host, ':') >= 0 && !strings.HasPrefix(host, "[") {
		sb.WriteByte('[')
		sb.WriteString(host)
		sb.WriteByte(']')
	} else {
		sb.WriteString(host)
	}
	if port > 0 {
		sb.WriteByte(':')
		sb.WriteString(strconv.Itoa(port))
	}
}

// FlowTokenFromURI returns the user part of the SIP or SIPS URI in uri — where an
// edge node finds its flow token again — and whether there was one. uri may
// be a Request-URI ("sip:TOKEN@host;lr") or a Route header value: a
// name-addr with or without display name ("Edge" <sip:TOKEN@host;lr>), an
// addr-spec, or several comma-separated values, of which the first is used.
// A password ("user:password@") is dropped; a user part with characters RFC
// 3261 does not allow there (other than escaped) is no user part. The
// extraction is syntactic: Registry.ResolveFlow says whether the result is a
// token.
func FlowTokenFromURI(uri string) (string, bool) {
	addr, ok := firstAddr(uri)
	if !ok {
		return "", false
	}
	var rest string
	switch {
	case len(addr) >= 4 && strings.EqualFold(addr[:4], "sip:"):
		rest = addr[4:]
	case len(addr) >= 5 && strings.EqualFold(addr[:5], "sips:"):
		rest = addr[5:]
	default:
		return "", false
	}
	at := strings.IndexByte(rest, '@')
	if at < 0 {
		return "", false
	}
	user := rest[:at]
	if i := strings.IndexByte(user, ':'); i >= 0 {
		user = user[:i]
	}
	if user == "" || !isSIPUser(user) {
		return "", false
	}
	return user, true
}

// isSIPUser reports whether s is made of the characters RFC 3261 §25.1 allows
// in the user part of a SIP URI: unreserved, escaped and user-unreserved.
func isSIPUser(s string) bool {
	for i := range len(s) {
		c := s[i]
		switch {
		case isAlpha(c), isDigit(c):
		case strings.IndexByte("-_.!~*'()%&=+$,;?/", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// firstAddr returns the URI of the first value of a header like Route: the
// part inside the first angle brackets outside a quoted display name, or,
// without angle brackets, everything up to the first comma or white space.
func firstAddr(s string) (string, bool) {
	s = strings.TrimLeft(s, " \t\r\n")
	inQuote := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQuote = false
			}
		case c == '"':
			inQuote = true
		case c == '<':
			end := strings.IndexByte(s[i+1:], '>')
			if end < 0 {
				return "", false
			}
			return strings.TrimSpace(s[i+1 : i+1+end]), true
		case c == ',' || c == ' ' || c == '\t' || c == '\r' || c == '\n':
			// An addr-spec ends here; but white space may also separate an
			// unquoted display name from its "<".
			if c != ',' {
				if j := strings.IndexAny(s[i:], ",<"); j >= 0 && s[i+j] == '<' {
					continue
				}
			}
			return s[:i], i > 0
		}
	}
	if inQuote {
		return "", false
	}
	return s, s != ""
}

// MSRPURI returns the MSRP URI of a session relayed over WebSocket:
// "msrp://HOST:PORT/SESSION;ws", or "msrps://…;ws" when secure (RFC 7977 §5,
// RFC 4975 §6). An IPv6 host is put in brackets; a port of 0 or less is left
// out. session must be an RFC 4975 session-id (unreserved characters and
// "+", "=", "/"); it is not escaped.
func MSRPURI(host string, port int, session string, secure bool) string {
	var sb strings.Builder
	sb.Grow(len("msrps://[]:65535/;ws") + len(host) + len(session))
	if secure {
		sb.WriteString("msrps://")
	} else {
		sb.WriteString("msrp://")
	}
	writeHostPort(&sb, host, port)
	sb.WriteByte('/')
	sb.WriteString(session)
	sb.WriteString(";ws")
	return sb.String()
}

// MSRPSessionFromURI returns the session-id of an msrp or msrps URI, and
// whether it has one. uri may be a whole To-Path or From-Path header value,
// which holds space-separated URIs: the first is used (in a To-Path received
// by a relay, the relay's own URI). The session-id runs from the "/" after
// the authority to the ";" before the transport, and must be 1*( unreserved /
// "+" / "=" / "/" ) (RFC 4975 §9).
func MSRPSessionFromURI(uri string) (string, bool) {
	s := strings.TrimLeft(uri, " \t\r\n")
	if i := strings.IndexAny(s, " \t\r\n"); i >= 0 {
		s = s[:i]
	}
	switch {
	case len(s) >= 7 && strings.EqualFold(s[:7], "msrp://"):
		s = s[7:]
	case len(s) >= 8 && strings.EqualFold(s[:8], "msrps://"):
		s = s[8:]
	default:
		return "", false
	}
	slash := strings.IndexByte(s, '/')
	if slash < 0 {
		return "", false
	}
	if semi := strings.IndexByte(s, ';'); semi >= 0 && semi < slash {
		return "", false // "msrp://host:port;tcp": no session-id
	}
	session := s[slash+1:]
	if semi := strings.IndexByte(session, ';'); semi >= 0 {
		session = session[:semi]
	}
	if session == "" {
		return "", false
	}
	for i := range len(session) {
		c := session[i]
		switch {
		case isAlpha(c), isDigit(c):
		case c == '-', c == '.', c == '_', c == '~', c == '+', c == '=', c == '/':
		default:
			return "", false
		}
	}
	return session, true
}
