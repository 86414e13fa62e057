package sipws

import (
	"errors"
	"strings"
	"testing"
)

// Fuzz targets for flow tokens and the URIs that carry them. They live in the
// package so that the FlowTokens under test has a fixed server run: the
// seed corpus then holds tokens that parse, and the fuzzer mutates valid
// tokens rather than only noise.

var (
	flowFuzzRun     = flowRun{0x5e, 0x1f, 0x0a, 0x7c, 0x33, 0x90, 0x42, 0xd1}
	flowFuzzKey     = []byte("fuzz key 0123456789abcdef0123456")
	flowFuzzOldKey  = []byte("fuzz old key 0123456789abcdef012")
	flowFuzzVectors = []struct {
		token string
		id    ConnID
		err   error
	}{
		// Computed independently (Python hmac/hashlib/base64) from the
		// layout documented in flow.go.
		{"AQVlZGdlMV4fCnwzkELRAWGRWQz8i2pgAU9rIQ", 1, nil},
		{"AQVlZGdlMV4fCnwzkELRrALtfxsUXOs_YFfudUk", 300, nil},
		{"AQVlZGdlMV4fCnwzkELR____________Ab1Mf8Qj6zo_fME4rw", 1<<64 - 1, nil},
		{"AQVlZGdlMV4fCnwzkELRKmQm9FtIFceDKa2DEA", 42, nil}, // signed with the previous key
		{"ARFlZGdlMi5leGFtcGxlLmNvbQAAAAAAAAAAByPDoXHpMgTBVe9mIQ", 0, ErrFlowForeign},
		{"AQVlZGdlMQAAAAAAAAAAB38ZmBIoVg2ghV6YQA", 0, ErrFlowStale},
	}
)

func flowFuzzTokens(t testing.TB) *FlowTokens {
	f, err := NewFlowTokens("edge1", flowFuzzKey, flowFuzzOldKey)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The token layout is stable: tokens issued by one version resolve in the
// next, and other implementations can be checked against these vectors.
func TestFlowTokenKnownAnswers(t *testing.T) {
	f := flowFuzzTokens(t)
	for _, v := range flowFuzzVectors {
		id, err := f.parse(flowFuzzRun, v.token)
		if !errors.Is(err, v.err) || (err == nil && v.err != nil) || id != v.id {
			t.Errorf("Parse(%s) = %d, %v; want %d, %v", v.token, id, err, v.id, v.err)
		}
		if v.err == nil && v.id != 42 {
			if got := f.token(flowFuzzRun, v.id); got != v.token {
				t.Errorf("Token(%d) = %s, want %s", v.id, got, v.token)
			}
		}
	}
}

func FuzzFlowParse(f *testing.F) {
	ft := flowFuzzTokens(f)
	oldKey, err := ft.withKeys(flowFuzzOldKey)
	if err != nil {
		f.Fatal(err)
	}
	for _, v := range flowFuzzVectors {
		f.Add(v.token, uint64(v.id))
	}
	for _, id := range []ConnID{0, 2, 127, 128, 1 << 20, 1 << 40} {
		f.Add(ft.token(flowFuzzRun, id), uint64(id))
	}
	f.Add("", uint64(0))
	f.Add("AQVlZGdlMV4fCnwzkELRAWGRWQz8i2pgAU9rIQ==", uint64(1))
	f.Add("AQVlZGdlMV4fCnwzkELRAWGRWQz8i2pgAU9rIQ\n", uint64(1))
	f.Fuzz(func(t *testing.T, token string, n uint64) {
		id, err := ft.parse(flowFuzzRun, token)
		switch {
		case err == nil:
			// A token that parses is the one Token makes for its ID with
			// one of the keys.
			if got, old := ft.token(flowFuzzRun, id), oldKey.token(flowFuzzRun, id); got != token && old != token {
				t.Fatalf("Parse(%q) = %d, but Token(%d) = %q (%q with the previous key)", token, id, id, got, old)
			}
		case errors.Is(err, ErrFlowInvalid), errors.Is(err, ErrFlowStale):
			if id != 0 {
				t.Fatalf("Parse(%q) failed with ID %d", token, id)
			}
		case errors.Is(err, ErrFlowForeign):
			var fe *ForeignFlowError
			if !errors.As(err, &fe) || !validFlowNode(fe.Node) || fe.Node == ft.Node() {
				t.Fatalf("Parse(%q): foreign error %v without a valid other node", token, err)
			}
		default:
			t.Fatalf("Parse(%q): unexpected error %v", token, err)
		}
		if err != nil && (errors.Is(err, ErrFlowInvalid) == (errors.Is(err, ErrFlowForeign) || errors.Is(err, ErrFlowStale))) {
			t.Fatalf("Parse(%q): error %v matches not exactly one sentinel", token, err)
		}

		// Every ID round-trips, with the current key and after rotation.
		tok := ft.token(flowFuzzRun, ConnID(n))
		if got, err := ft.parse(flowFuzzRun, tok); err != nil || got != ConnID(n) {
			t.Fatalf("Parse(Token(%d)) = %d, %v", n, got, err)
		}
		if len(tok) > flowMaxEncoded || strings.Trim(tok, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
			t.Fatalf("Token(%d) = %q: too long or not base64url", n, tok)
		}
	})
}

func FuzzTokenFromURI(f *testing.F) {
	ft := flowFuzzTokens(f)
	tok := ft.token(flowFuzzRun, 7)
	for _, s := range []string{
		"<sip:" + tok + "@edge1.example.com:443;transport=ws;lr>",
		`"Edge, one" <sip:` + tok + `@edge1.example.com;lr;ob>, <sip:10.0.0.2;lr>`,
		"Edge <sips:" + tok + ":pw@[2001:db8::1]:443;lr>",
		"sip:" + tok + "@edge1.example.com:443;transport=ws;lr;ob",
		"<sip:10.0.0.2;lr>",
		`"unterminated <sip:a@b>`,
		"msrps://relay.example.com:443/kjhd37s2s20w2a;ws msrp://df7jal23ls0d.invalid:2855/98cjs;ws",
		"",
	} {
		f.Add(s, tok, "kjhd37s2s20w2a")
	}
	f.Fuzz(func(t *testing.T, uri, token, session string) {
		if user, ok := FlowTokenFromURI(uri); ok {
			if user == "" || !strings.Contains(uri, user) || strings.ContainsAny(user, "@<") {
				t.Fatalf("TokenFromURI(%q) = %q", uri, user)
			}
			_, _ = ft.parse(flowFuzzRun, user)
		} else if user != "" {
			t.Fatalf("TokenFromURI(%q) = %q, false", uri, user)
		}
		if s, ok := MSRPSessionFromURI(uri); ok {
			if s == "" || !strings.Contains(uri, s) {
				t.Fatalf("MSRPSessionFromURI(%q) = %q", uri, s)
			}
		} else if s != "" {
			t.Fatalf("MSRPSessionFromURI(%q) = %q, false", uri, s)
		}

		// A base64url token survives FlowURI and a Route header around it.
		if token != "" && strings.Trim(token, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == "" {
			for _, route := range []string{
				flowURI(token, "edge1.example.com", 443, true),
				"<" + flowURI(token, "2001:db8::1", 0, false) + ">, <sip:core;lr>",
				`"Edge, \"one\"" <` + flowURI(token, "192.0.2.1", 8443, true) + ">",
			} {
				if got, ok := FlowTokenFromURI(route); !ok || got != token {
					t.Fatalf("TokenFromURI(%q) = %q, %v; want %q", route, got, ok, token)
				}
			}
		}
		// A session-id survives MSRPURI, first in a To-Path.
		if session != "" && strings.Trim(session, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+=/") == "" {
			path := MSRPURI("relay.example.com", 443, session, true) + " " + MSRPURI("df7jal23ls0d.invalid", 2855, "98cjs", false)
			if got, ok := MSRPSessionFromURI(path); !ok || got != session {
				t.Fatalf("MSRPSessionFromURI(%q) = %q, %v; want %q", path, got, ok, session)
			}
		}
	})
}
