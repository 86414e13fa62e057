package sipws_test

import (
	"encoding/base64"
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// This file checks flow tokens (RFC 5626 §5.2) and the SIP and MSRP URIs that
// carry them.

var (
	ftkKeyA = []byte("key A: 0123456789abcdef0123456789abcdef")
	ftkKeyB = []byte("key B: fedcba9876543210fedcba9876543210")
	ftkKeyC = []byte("key C: 16 bytes!")
)

// ftkNew returns an issuer of the flow tokens of node with a run of its own,
// as a new Server would have.
func ftkNew(t testing.TB, node string, key []byte, previous ...[]byte) *sipws.FlowIssuer {
	t.Helper()
	f, err := sipws.NewFlowTokens(node, key, previous...)
	require.NoError(t, err)
	return sipws.NewFlowIssuer(f)
}

// ftkIDs are connection IDs around every uvarint length boundary, and some
// random ones.
func ftkIDs() []sipws.ConnID {
	ids := []sipws.ConnID{0, 1, 2, 63, 64, 127, 128, 255, 256, 300, 16383, 16384, 1 << 21, 1<<32 - 1, 1 << 32, 1 << 56, 1<<63 - 1, 1 << 63, math.MaxUint64}
	for i := 1; i < 64; i++ {
		ids = append(ids, sipws.ConnID(1)<<i-1, sipws.ConnID(1)<<i)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		ids = append(ids, sipws.ConnID(r.Uint64()>>r.IntN(64)))
	}
	return ids
}

func TestFlowNewFlowTokensValidation(t *testing.T) {
	good := []string{"e", "edge1", "edge-1.example_com", strings.Repeat("a", 32), "EDGE.01"}
	for _, node := range good {
		f, err := sipws.NewFlowTokens(node, ftkKeyA)
		require.NoError(t, err, node)
		assert.Equal(t, node, f.Node())
	}
	bad := []string{"", strings.Repeat("a", 33), "edge 1", "edge/1", "édge", "edge:1", "edge@1", "edge\x00"}
	for _, node := range bad {
		_, err := sipws.NewFlowTokens(node, ftkKeyA)
		require.Error(t, err, "%q", node)
		assert.Contains(t, err.Error(), "node name")
	}
	_, err := sipws.NewFlowTokens("edge1", ftkKeyC) // exactly 16 bytes
	assert.NoError(t, err)
	_, err = sipws.NewFlowTokens("edge1", ftkKeyC[:15])
	require.Error(t, err)
	assert.Contains(t, err.Error(), "key is 15 bytes, want at least 16")
	_, err = sipws.NewFlowTokens("edge1", nil)
	assert.Error(t, err)
	_, err = sipws.NewFlowTokens("edge1", ftkKeyA, ftkKeyB, []byte("short"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "previous key 2 is 5 bytes")
}

// The keys are copied: changing the caller's slice changes nothing.
func TestFlowKeysCopied(t *testing.T) {
	key := append([]byte(nil), ftkKeyA...)
	f := ftkNew(t, "edge1", key)
	tok := f.Token(42)
	key[0] ^= 0xff
	id, err := f.Parse(tok)
	require.NoError(t, err)
	assert.Equal(t, sipws.ConnID(42), id)
	assert.Equal(t, tok, f.Token(42))
}

func TestFlowTokenRoundTrip(t *testing.T) {
	for _, node := range []string{"e", "edge1", strings.Repeat("n", 32)} {
		f := ftkNew(t, node, ftkKeyA)
		seen := map[string]bool{}
		for _, id := range ftkIDs() {
			tok := f.Token(id)
			assert.Equal(t, tok, f.Token(id), "deterministic")
			got, err := f.Parse(tok)
			require.NoError(t, err, "id %d token %s", id, tok)
			require.Equal(t, id, got)
			seen[tok] = true
		}
		assert.Len(t, seen, len(ftkIDSet()), "distinct IDs give distinct tokens")
	}
}

func ftkIDSet() map[sipws.ConnID]bool {
	m := map[sipws.ConnID]bool{}
	for _, id := range ftkIDs() {
		m[id] = true
	}
	return m
}

// A token fits unescaped in the user part of a SIP URI (RFC 3261 §25.1:
// user = 1*( unreserved / escaped / user-unreserved )), and is short.
func TestFlowTokenFitsUserPart(t *testing.T) {
	const userChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" +
		"-_.!~*'()" + // mark
		"&=+$,;?/" // user-unreserved
	f := ftkNew(t, "edge1", ftkKeyA)
	for _, id := range ftkIDs() {
		tok := f.Token(id)
		for _, c := range tok {
			require.True(t, strings.ContainsRune(userChars, c), "%q in %s", c, tok)
			require.True(t, strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", c), "%q is not base64url", c)
		}
	}
	assert.Len(t, f.Token(1), 38)
	assert.Less(t, len(f.Token(1<<20)), 50)
	assert.LessOrEqual(t, len(f.Token(math.MaxUint64)), 50)
	long := ftkNew(t, strings.Repeat("n", 32), ftkKeyA)
	assert.LessOrEqual(t, len(long.Token(math.MaxUint64)), 86)
}

// Changing any character of a token to any other makes it invalid: the MAC
// covers every byte, and base64url is decoded strictly.
func TestFlowTokenTamperEveryCharacter(t *testing.T) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	f := ftkNew(t, "edge1", ftkKeyA)
	for _, id := range []sipws.ConnID{1, 300, math.MaxUint64} {
		tok := f.Token(id)
		for i := range len(tok) {
			for _, c := range []byte(alphabet) {
				if c == tok[i] {
					continue
				}
				bad := tok[:i] + string(c) + tok[i+1:]
				_, err := f.Parse(bad)
				require.ErrorIs(t, err, sipws.ErrFlowInvalid, "position %d -> %q: %s", i, c, bad)
			}
		}
	}
}

// Flipping any bit of the decoded token makes it invalid.
func TestFlowTokenTamperEveryBit(t *testing.T) {
	enc := base64.RawURLEncoding
	f := ftkNew(t, "edge1", ftkKeyA)
	raw, err := enc.DecodeString(f.Token(12345))
	require.NoError(t, err)
	for i := range raw {
		for bit := range 8 {
			b := append([]byte(nil), raw...)
			b[i] ^= 1 << bit
			_, err := f.Parse(enc.EncodeToString(b))
			require.ErrorIs(t, err, sipws.ErrFlowInvalid, "byte %d bit %d", i, bit)
		}
	}
}

func TestFlowTokenTruncatedAndExtended(t *testing.T) {
	f := ftkNew(t, "edge1", ftkKeyA)
	tok := f.Token(77)
	for i := range len(tok) {
		_, err := f.Parse(tok[:i])
		require.ErrorIs(t, err, sipws.ErrFlowInvalid, "prefix %d", i)
		_, err = f.Parse(tok[i+1:])
		require.ErrorIs(t, err, sipws.ErrFlowInvalid, "suffix %d", i)
	}
	for _, extra := range []string{"A", "AA", "AAA", "AAAA", tok} {
		_, err := f.Parse(tok + extra)
		require.ErrorIs(t, err, sipws.ErrFlowInvalid, "extended by %q", extra)
	}
	_, err := f.Parse(strings.Repeat("A", 10000))
	assert.ErrorIs(t, err, sipws.ErrFlowInvalid)
}

func TestFlowTokenWrongAlphabet(t *testing.T) {
	f := ftkNew(t, "edge1", ftkKeyA)
	tok := f.Token(77)
	for _, c := range []string{"+", "/", "=", ".", " ", "\n", "\r", "%", "~", "\x00", "é", "\xff"} {
		for _, i := range []int{0, len(tok) / 2, len(tok) - 1} {
			bad := tok[:i] + c + tok[i+1:]
			_, err := f.Parse(bad)
			require.ErrorIs(t, err, sipws.ErrFlowInvalid, "%q at %d", c, i)
		}
		_, err := f.Parse(tok + c)
		require.ErrorIs(t, err, sipws.ErrFlowInvalid, "%q appended", c)
	}
	// The standard alphabet and padding are not accepted either.
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	require.NoError(t, err)
	for _, enc := range []*base64.Encoding{base64.URLEncoding, base64.StdEncoding} {
		other := enc.EncodeToString(raw)
		if other == tok {
			continue
		}
		_, err := f.Parse(other)
		assert.ErrorIs(t, err, sipws.ErrFlowInvalid, other)
	}
	// Escaped as a SIP URI user part would be, were it needed: not a token.
	_, err = f.Parse("%41" + tok[1:])
	assert.ErrorIs(t, err, sipws.ErrFlowInvalid)
	_, err = f.Parse("")
	assert.ErrorIs(t, err, sipws.ErrFlowInvalid)
}

func TestFlowTokenRotation(t *testing.T) {
	oldF := ftkNew(t, "edge1", ftkKeyA)
	tokA := oldF.Token(9)

	// The same run, rotated: A is still accepted, B signs.
	rotated, err := oldF.WithKeys(ftkKeyB, ftkKeyA)
	require.NoError(t, err)
	assert.Equal(t, "edge1", rotated.Node())
	id, err := rotated.Parse(tokA)
	require.NoError(t, err)
	assert.Equal(t, sipws.ConnID(9), id)
	tokB := rotated.Token(9)
	assert.NotEqual(t, tokA, tokB)
	id, err = rotated.Parse(tokB)
	require.NoError(t, err)
	assert.Equal(t, sipws.ConnID(9), id)

	// The old one does not know B.
	_, err = oldF.Parse(tokB)
	assert.ErrorIs(t, err, sipws.ErrFlowInvalid)

	// A dropped: tokens signed with A are forgeries now.
	dropped, err := rotated.WithKeys(ftkKeyB)
	require.NoError(t, err)
	_, err = dropped.Parse(tokA)
	assert.ErrorIs(t, err, sipws.ErrFlowInvalid)
	id, err = dropped.Parse(tokB)
	require.NoError(t, err)
	assert.Equal(t, sipws.ConnID(9), id)

	// Several previous keys, in any position.
	many, err := oldF.WithKeys(ftkKeyC, ftkKeyB, ftkKeyA)
	require.NoError(t, err)
	for _, tok := range []string{tokA, tokB, many.Token(9)} {
		id, err := many.Parse(tok)
		require.NoError(t, err)
		assert.Equal(t, sipws.ConnID(9), id)
	}

	// After a restart with rotated keys, a token signed with the previous
	// key is recognised as stale (430), not as a forgery (403).
	restarted := ftkNew(t, "edge1", ftkKeyB, ftkKeyA)
	_, err = restarted.Parse(tokA)
	assert.ErrorIs(t, err, sipws.ErrFlowStale)
	restartedDropped := ftkNew(t, "edge1", ftkKeyB)
	_, err = restartedDropped.Parse(tokA)
	assert.ErrorIs(t, err, sipws.ErrFlowInvalid)

	_, err = oldF.WithKeys(ftkKeyC[:10])
	assert.Error(t, err)
}

func TestFlowTokenForeignNode(t *testing.T) {
	edge1 := ftkNew(t, "edge1", ftkKeyA)
	edge2 := ftkNew(t, "edge2.example.com", ftkKeyB, ftkKeyA)
	tok := edge2.Token(5)

	// edge1 verifies B? No: it only has A, so edge2's current tokens are
	// forgeries to it.
	_, err := edge1.Parse(tok)
	assert.ErrorIs(t, err, sipws.ErrFlowInvalid)

	// With a shared key, edge2's token is foreign, and names edge2.
	shared := ftkNew(t, "edge1", ftkKeyA, ftkKeyB)
	_, err = shared.Parse(tok)
	require.ErrorIs(t, err, sipws.ErrFlowForeign)
	assert.NotErrorIs(t, err, sipws.ErrFlowInvalid)
	var fe *sipws.ForeignFlowError
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "edge2.example.com", fe.Node)
	assert.Contains(t, err.Error(), `"edge2.example.com"`)

	// edge2 signs with B and still accepts A: edge1's tokens are foreign to it.
	_, err = edge2.Parse(edge1.Token(5))
	require.ErrorAs(t, err, &fe)
	assert.Equal(t, "edge1", fe.Node)

	// A node whose name is a prefix of ours is another node.
	_, err = ftkNew(t, "edge", ftkKeyA).Parse(edge1.Token(5))
	assert.ErrorIs(t, err, sipws.ErrFlowForeign)
}

func TestFlowTokenStaleInstance(t *testing.T) {
	before := ftkNew(t, "edge1", ftkKeyA)
	after := ftkNew(t, "edge1", ftkKeyA) // the same node, another Server
	tok := before.Token(1)
	assert.NotEqual(t, tok, after.Token(1), "the run differs")
	_, err := after.Parse(tok)
	require.ErrorIs(t, err, sipws.ErrFlowStale)
	assert.NotErrorIs(t, err, sipws.ErrFlowInvalid)
	assert.NotErrorIs(t, err, sipws.ErrFlowForeign)
	id, err := after.Parse(after.Token(1))
	require.NoError(t, err)
	assert.Equal(t, sipws.ConnID(1), id)
}

func TestFlowErrorsDistinct(t *testing.T) {
	all := []error{sipws.ErrFlowInvalid, sipws.ErrFlowForeign, sipws.ErrFlowStale}
	for i, a := range all {
		for j, b := range all {
			assert.Equal(t, i == j, errors.Is(a, b))
		}
		assert.True(t, strings.HasPrefix(a.Error(), "sipws: "))
	}
}

func TestFlowTokensConcurrent(t *testing.T) {
	f := ftkNew(t, "edge1", ftkKeyA, ftkKeyB)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				id := sipws.ConnID(g*1000 + i)
				got, err := f.Parse(f.Token(id))
				if err != nil || got != id {
					t.Errorf("id %d: got %d, %v", id, got, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestFlowURI(t *testing.T) {
	cases := []struct {
		token, host string
		port        int
		ob          bool
		want        string
	}{
		{"AbC-_9", "192.0.2.10", 8443, false, "sip:AbC-_9@192.0.2.10:8443;transport=ws;lr"},
		{"AbC-_9", "192.0.2.10", 8443, true, "sip:AbC-_9@192.0.2.10:8443;transport=ws;lr;ob"},
		{"AbC-_9", "2001:db8::1", 443, true, "sip:AbC-_9@[2001:db8::1]:443;transport=ws;lr;ob"},
		{"AbC-_9", "[2001:db8::1]", 443, false, "sip:AbC-_9@[2001:db8::1]:443;transport=ws;lr"},
		{"AbC-_9", "::1", 0, false, "sip:AbC-_9@[::1];transport=ws;lr"},
		{"AbC-_9", "edge1.example.com", 443, false, "sip:AbC-_9@edge1.example.com:443;transport=ws;lr"},
		{"AbC-_9", "edge1.example.com", 0, true, "sip:AbC-_9@edge1.example.com;transport=ws;lr;ob"},
		{"AbC-_9", "edge1.example.com", -1, false, "sip:AbC-_9@edge1.example.com;transport=ws;lr"},
		{"", "edge1.example.com", 443, false, "sip:edge1.example.com:443;transport=ws;lr"},
	}
	for _, tc := range cases {
		assert.Equal(t, tc.want, sipws.FlowURI(tc.token, tc.host, tc.port, tc.ob))
	}
}

func TestFlowTokenFromURI(t *testing.T) {
	const tok = "AQVlZGdlMbV0c2R4YWJjZAEp6zA2qB1xkPfU"
	good := []string{
		// Route header values.
		"<sip:" + tok + "@edge1.example.com:443;transport=ws;lr>",
		"<sip:" + tok + "@edge1.example.com;lr;ob>,<sip:10.0.0.2;lr>",
		"<sip:" + tok + "@edge1.example.com;lr>, <sip:proxy.example.com;lr>",
		"  <sip:" + tok + "@192.0.2.10:8443;transport=ws;lr>  ",
		`"Edge, the first" <sip:` + tok + `@edge1.example.com;lr>, <sip:x;lr>`,
		`"Edge \"<quoted>\" name" <sip:` + tok + `@edge1.example.com;lr>`,
		"Edge Proxy <sip:" + tok + "@edge1.example.com;lr>",
		"<sips:" + tok + "@[2001:db8::1]:443;transport=ws;lr>;foo=bar",
		"<SIP:" + tok + "@EDGE1.EXAMPLE.COM;LR>",
		"<sip:" + tok + ":secret@edge1.example.com;lr>",
		// Request-URIs and bare addr-specs.
		"sip:" + tok + "@edge1.example.com:443;transport=ws;lr;ob",
		"sip:" + tok + "@[2001:db8::1];transport=ws",
		"sip:" + tok + "@edge1.example.com;lr,<sip:proxy.example.com;lr>",
		"sip:" + tok + "@edge1.example.com;lr , <sip:proxy.example.com;lr>",
	}
	for _, uri := range good {
		got, ok := sipws.FlowTokenFromURI(uri)
		assert.True(t, ok, uri)
		assert.Equal(t, tok, got, uri)
	}
	bad := []string{
		"",
		"   ",
		"<sip:edge1.example.com;lr>",
		"<sip:10.0.0.2;lr>, <sip:" + tok + "@edge1.example.com;lr>", // the first route has no user
		"sip:edge1.example.com:443;transport=ws;lr",
		"tel:+15551234567",
		"<mailto:" + tok + "@example.com>",
		"<sip:" + tok + "@edge1.example.com;lr", // no closing bracket
		`"unterminated <sip:` + tok + `@edge1.example.com>`,
		"<sip:@edge1.example.com;lr>",
		"<sip::pw@edge1.example.com;lr>",
		"<>",
		"<sip:<@>",
		"<sip:a b@edge1.example.com;lr>",
		"<sip:a\"b@edge1.example.com;lr>",
		"sip:",
		"sips",
	}
	for _, uri := range bad {
		got, ok := sipws.FlowTokenFromURI(uri)
		assert.False(t, ok, "%q gave %q", uri, got)
		assert.Empty(t, got)
	}
}

// The whole way: the token an edge puts in Path comes back in a Route, and
// resolves to the connection.
func TestFlowTokenThroughURI(t *testing.T) {
	f := ftkNew(t, "edge1", ftkKeyA)
	for _, id := range ftkIDs()[:40] {
		for _, ob := range []bool{false, true} {
			route := `"edge" <` + sipws.FlowURI(f.Token(id), "2001:db8::7", 443, ob) + `>, <sip:core.example.com;lr>`
			tok, ok := sipws.FlowTokenFromURI(route)
			require.True(t, ok, route)
			got, err := f.Parse(tok)
			require.NoError(t, err)
			assert.Equal(t, id, got)
		}
	}
}

func TestFlowMSRPURI(t *testing.T) {
	assert.Equal(t, "msrps://relay.example.com:443/kjhd37s2s20w2a;ws", sipws.MSRPURI("relay.example.com", 443, "kjhd37s2s20w2a", true))
	assert.Equal(t, "msrp://relay.example.com:8080/kjhd37s2s20w2a;ws", sipws.MSRPURI("relay.example.com", 8080, "kjhd37s2s20w2a", false))
	assert.Equal(t, "msrp://192.0.2.1:2855/s;ws", sipws.MSRPURI("192.0.2.1", 2855, "s", false))
	assert.Equal(t, "msrps://[2001:db8::1]:443/a+b=c/d;ws", sipws.MSRPURI("2001:db8::1", 443, "a+b=c/d", true))
	assert.Equal(t, "msrps://relay.example.com/x;ws", sipws.MSRPURI("relay.example.com", 0, "x", true))
}

func TestFlowMSRPSessionFromURI(t *testing.T) {
	good := map[string]string{
		"msrps://relay.example.com:443/kjhd37s2s20w2a;ws":                                                 "kjhd37s2s20w2a",
		"msrps://relay.example.com:443/kjhd37s2s20w2a;ws msrp://df7jal23ls0d.invalid:2855/98cjs;ws":       "kjhd37s2s20w2a",
		"  msrp://df7jal23ls0d.invalid:2855/98cjs;ws":                                                     "98cjs",
		"msrp://[2001:db8::1]:2855/a+b=c/d-._~;ws;foo=bar":                                                "a+b=c/d-._~",
		"MSRPS://Relay.Example.com:443/AbC;WS":                                                            "AbC",
		"msrp://bob@relay.example.com:443/s1;tcp":                                                         "s1",
		"msrp://relay.example.com:443/no-transport":                                                       "no-transport",
		"msrp://relay.example.com:443/s2;ws\tmsrp://x/y;ws":                                               "s2",
		sipws.MSRPURI("relay.example.com", 443, "9di4eae923wzd", true):                                    "9di4eae923wzd",
		sipws.MSRPURI("2001:db8::1", 0, "iau39soe2843z", false) + " " + sipws.MSRPURI("h", 1, "z", false): "iau39soe2843z",
	}
	for uri, want := range good {
		got, ok := sipws.MSRPSessionFromURI(uri)
		assert.True(t, ok, uri)
		assert.Equal(t, want, got, uri)
	}
	bad := []string{
		"",
		"msrp://relay.example.com:443;ws", // a relay's own URI has no session
		"msrps://relay.example.com:443;ws msrp://x/y;ws",
		"msrp://relay.example.com:443/;ws",
		"msrp://relay.example.com:443/a%20b;ws",
		"msrp://relay.example.com:443/a\"b;ws",
		"http://relay.example.com/s;ws",
		"sip:s@relay.example.com",
		"msrp:/relay/s;ws",
		"msrp://",
	}
	for _, uri := range bad {
		got, ok := sipws.MSRPSessionFromURI(uri)
		assert.False(t, ok, "%q gave %q", uri, got)
		assert.Empty(t, got)
	}
}

func BenchmarkFlowTokenParse(b *testing.B) {
	f := ftkNew(b, "edge1", ftkKeyA, ftkKeyB)
	tok := f.Token(123456)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.Parse(tok); err != nil {
			b.Fatal(err)
		}
	}
}
