package sipws

import (
	"fmt"
	"net/http"
	"strings"
)

// Subprotocol is a WebSocket sub-protocol this package speaks, as a bit in a
// set: SIP (RFC 7118) and MSRP (RFC 7977). Config.Subprotocols is such a set,
// like Kamailio's sub_protocols modparam (sip=1, msrp=2). A Conn always has
// exactly one of them: the one echoed in the 101 response.
type Subprotocol uint8

const (
	// SIP is the "sip" sub-protocol of RFC 7118.
	SIP Subprotocol = 1
	// MSRP is the "msrp" sub-protocol of RFC 7977.
	MSRP Subprotocol = 2

	allSubprotocols = SIP | MSRP
)

// subprotocolOrder is the server's preference when a client offers more than
// one enabled sub-protocol: sip before msrp.
var subprotocolOrder = [...]Subprotocol{SIP, MSRP}

// Token returns the sub-protocol's registered token ("sip" or "msrp"), or ""
// when s is not exactly one known sub-protocol.
func (s Subprotocol) Token() string {
	switch s {
	case SIP:
		return "sip"
	case MSRP:
		return "msrp"
	}
	return ""
}

// String returns the token of a single sub-protocol, the tokens of a set joined
// by "|" ("sip|msrp"), or "none" for the empty set.
func (s Subprotocol) String() string {
	if t := s.Token(); t != "" {
		return t
	}
	var parts []string
	for _, p := range subprotocolOrder {
		if s&p != 0 {
			parts = append(parts, p.Token())
		}
	}
	if rest := s &^ allSubprotocols; rest != 0 {
		parts = append(parts, "unknown")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "|")
}

// index is the position of a single sub-protocol in per-sub-protocol arrays.
func (s Subprotocol) index() int {
	if s == MSRP {
		return 1
	}
	return 0
}

// parseSubprotocols parses a comma-separated list of tokens ("sip,msrp") into
// a set. Tokens are matched without regard to case; an unknown token is an
// error.
func parseSubprotocols(list string) (Subprotocol, error) {
	var set Subprotocol
	for tok := range strings.SplitSeq(list, ",") {
		tok = strings.TrimSpace(tok)
		switch {
		case strings.EqualFold(tok, "sip"):
			set |= SIP
		case strings.EqualFold(tok, "msrp"):
			set |= MSRP
		default:
			return 0, fmt.Errorf("sipws: unknown sub-protocol %s in %s (want sip, msrp or both)", quote(tok), quote(list))
		}
	}
	return set, nil
}

// negotiateSubprotocol picks the one sub-protocol the connection will speak:
// the first, in server preference order, of the enabled ones that the client
// offered in its Sec-WebSocket-Protocol header(s). Tokens are compared without
// regard to case, as browsers and Kamailio do; the reply carries the
// registered lower-case token. It returns 0 when there is none, and whether
// the client offered any token at all, known or not.
func negotiateSubprotocol(h http.Header, enabled Subprotocol) (sp Subprotocol, anyOffered bool) {
	var offered Subprotocol
	for _, line := range h.Values("Sec-WebSocket-Protocol") {
		for tok := range strings.SplitSeq(line, ",") {
			tok = strings.TrimSpace(tok)
			anyOffered = anyOffered || tok != ""
			switch {
			case strings.EqualFold(tok, "sip"):
				offered |= SIP
			case strings.EqualFold(tok, "msrp"):
				offered |= MSRP
			}
		}
	}
	for _, p := range subprotocolOrder {
		if offered&enabled&p != 0 {
			return p, anyOffered
		}
	}
	return 0, anyOffered
}

// MarshalText implements encoding.TextMarshaler: the String form ("sip",
// "sip|msrp", "none"), which UnmarshalText reads back.
func (s Subprotocol) MarshalText() ([]byte, error) {
	if s&^allSubprotocols != 0 {
		return nil, fmt.Errorf("sipws: unknown sub-protocol bits %#x", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler (and so flag.TextVar):
// tokens separated by "," or "|" ("sip,msrp"), in any case; "" and "none"
// are the empty set.
func (s *Subprotocol) UnmarshalText(b []byte) error {
	t := strings.TrimSpace(string(b))
	if t == "" || strings.EqualFold(t, "none") {
		*s = 0
		return nil
	}
	v, err := parseSubprotocols(strings.ReplaceAll(t, "|", ","))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
