package sipws_test

import (
	"errors"
	"testing"

	"github.com/sipws/sipws"
)

// BenchmarkFlowTokenEncode is the encoding behind Conn.FlowToken: the flow
// token of a connection for a Path or Record-Route URI (one HMAC-SHA256,
// base64url).
func BenchmarkFlowTokenEncode(b *testing.B) {
	f := ftkNew(b, "edge1", ftkKeyA, ftkKeyB)
	b.ReportAllocs()
	id := sipws.ConnID(1)
	for b.Loop() {
		if tok := f.Token(id); len(tok) == 0 {
			b.Fatal("empty token")
		}
		id++
	}
}

// BenchmarkFlowTokenParsePreviousKey is the check behind Registry.ResolveFlow
// of a token signed with the previous key during a key rotation: two MACs
// are computed.
func BenchmarkFlowTokenParsePreviousKey(b *testing.B) {
	old := ftkNew(b, "edge1", ftkKeyB)
	f, err := old.WithKeys(ftkKeyA, ftkKeyB)
	if err != nil {
		b.Fatal(err)
	}
	tok := old.Token(123456)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Parse(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFlowTokenParseForged is the check behind Registry.ResolveFlow of a
// well-formed token whose MAC is wrong: every key is tried, and the error is
// built.
func BenchmarkFlowTokenParseForged(b *testing.B) {
	f := ftkNew(b, "edge1", ftkKeyA, ftkKeyB)
	tok := []byte(f.Token(123456))
	if tok[len(tok)-2] == 'A' {
		tok[len(tok)-2] = 'B'
	} else {
		tok[len(tok)-2] = 'A'
	}
	forged := string(tok)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Parse(forged); !errors.Is(err, sipws.ErrFlowInvalid) {
			b.Fatalf("Parse of a forged token: %v", err)
		}
	}
}
