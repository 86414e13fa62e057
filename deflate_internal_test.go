package sipws

import (
	"bytes"
	stdflate "compress/flate"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNegotiateDeflate is the negotiation matrix of RFC 7692 §5 and §7.1:
// what the server answers (or that it answers nothing) for each offer.
func TestNegotiateDeflate(t *testing.T) {
	const base = "permessage-deflate; client_no_context_takeover"
	for _, tc := range []struct {
		name   string
		values []string
		want   string // "" when compression is not negotiated
	}{
		{"chromium", []string{"permessage-deflate; client_max_window_bits"}, base},
		{"firefox", []string{"permessage-deflate"}, base},
		{"no header", nil, ""},
		{"other extension only", []string{"x-webkit-deflate-frame"}, ""},
		{"case of the name", []string{"Permessage-Deflate"}, base},
		{"client_max_window_bits=10", []string{"permessage-deflate; client_max_window_bits=10"}, base},
		{"client_max_window_bits quoted", []string{`permessage-deflate; client_max_window_bits="12"`}, base},
		{"client_max_window_bits=7 declined", []string{"permessage-deflate; client_max_window_bits=7"}, ""},
		{"client_max_window_bits=16 declined", []string{"permessage-deflate; client_max_window_bits=16"}, ""},
		{"client_max_window_bits=08 declined", []string{"permessage-deflate; client_max_window_bits=08"}, ""},
		{"client_max_window_bits=x declined", []string{"permessage-deflate; client_max_window_bits=x"}, ""},
		{"server_max_window_bits=10", []string{"permessage-deflate; server_max_window_bits=10"}, base + "; server_max_window_bits=10"},
		{"server_max_window_bits=8", []string{"permessage-deflate;server_max_window_bits=8"}, base + "; server_max_window_bits=8"},
		{"server_max_window_bits quoted", []string{`permessage-deflate; server_max_window_bits="15"`}, base + "; server_max_window_bits=15"},
		{"server_max_window_bits without value declined", []string{"permessage-deflate; server_max_window_bits"}, ""},
		{"server_no_context_takeover", []string{"permessage-deflate; server_no_context_takeover"}, base + "; server_no_context_takeover"},
		{"client_no_context_takeover", []string{"permessage-deflate; client_no_context_takeover"}, base},
		{"both no_context_takeover", []string{"permessage-deflate; client_no_context_takeover; server_no_context_takeover"}, base + "; server_no_context_takeover"},
		{"no_context_takeover with a value declined", []string{"permessage-deflate; server_no_context_takeover=1"}, ""},
		{"duplicate parameter declined", []string{"permessage-deflate; client_max_window_bits; client_max_window_bits"}, ""},
		{"duplicate differing in case declined", []string{"permessage-deflate; server_no_context_takeover; Server_No_Context_Takeover"}, ""},
		{"unknown parameter declined", []string{"permessage-deflate; foo=bar"}, ""},
		{"declined offer, next accepted", []string{"permessage-deflate; foo, permessage-deflate; server_max_window_bits=12"}, base + "; server_max_window_bits=12"},
		{"offers on two lines", []string{"permessage-deflate; server_max_window_bits=7", "permessage-deflate; server_no_context_takeover"}, base + "; server_no_context_takeover"},
		{"first acceptable of several", []string{"x-foo, permessage-deflate; server_max_window_bits=9, permessage-deflate"}, base + "; server_max_window_bits=9"},
		{"whitespace and empty elements", []string{" ,permessage-deflate \t;\tclient_max_window_bits , "}, base},
		{"quoted value with a comma", []string{`x-foo; a="1,2", permessage-deflate`}, base},
		{"malformed: unterminated quote", []string{`permessage-deflate; client_max_window_bits="15`}, ""},
		{"malformed: missing parameter name", []string{"permessage-deflate; =15"}, ""},
		{"malformed: garbage after name", []string{"permessage-deflate foo"}, ""},
		{"malformed: empty value", []string{"permessage-deflate; server_max_window_bits="}, ""},
		{"malformed elsewhere ignores all", []string{"permessage-deflate", "x-foo; @"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, ok := negotiateDeflate(tc.values)
			if tc.want == "" {
				assert.False(t, ok, "negotiated %q", p.response())
				return
			}
			require.True(t, ok)
			assert.Equal(t, tc.want, p.response())
		})
	}
}

// inflateStd inflates a compressed message with the standard library's
// decompressor, the history (the peer's window) as its dictionary.
func inflateStd(t testing.TB, p, hist []byte) []byte {
	t.Helper()
	r := stdflate.NewReaderDict(io.MultiReader(bytes.NewReader(p), bytes.NewReader(deflateTail[:])), hist)
	out, err := io.ReadAll(r)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		require.NoError(t, err)
	}
	return out
}

// TestDeflaterHistory checks that what compress produces inflates, in a
// standard decompressor that keeps the peer's window (context takeover),
// to what was sent, over a run of messages long enough to roll the history;
// and that within a window of 2^8 bytes no reference reaches past it.
func TestDeflaterHistory(t *testing.T) {
	for _, p := range []deflateParams{{}, {serverNoContext: true}, {serverBits: 8}, {serverBits: 10}} {
		d := newDeflater(p)
		var window []byte // what the peer's inflater holds
		compressed, total := 0, 0
		for i := range 60 {
			msg := []byte(strings.Repeat("SIP/2.0 200 OK\r\nVia: SIP/2.0/WSS a.invalid;branch=z9hG4bK", 1+i%5) + strings.Repeat("x", i*37%300))
			out, ok := d.compress(nil, msg)
			total += len(msg)
			if !ok {
				continue
			}
			hist := window
			if p.serverNoContext {
				hist = nil
			}
			if lim := d.window; len(hist) > lim {
				// Only the last window's bytes: a reference past them
				// would not inflate to the message.
				hist = hist[len(hist)-lim:]
			}
			require.Equal(t, string(msg), string(inflateStd(t, out, hist)), "message %d with %+v", i, p)
			d.sent(msg)
			window = append(window, msg...)
			compressed += len(out)
			assert.LessOrEqual(t, len(d.hist), d.keep)
		}
		t.Logf("%+v: %d bytes to %d", p, total, compressed)
		assert.Positive(t, compressed)
	}
}

// TestInflateBounds checks the inflate limit: a message that inflates past
// the limit stops there (errInflateTooBig) having grown its buffer to no more
// than the limit and one byte, and data that is not DEFLATE fails.
func TestInflateBounds(t *testing.T) {
	s, err := New(Config{})
	require.NoError(t, err)
	var bomb bytes.Buffer
	w, _ := stdflate.NewWriter(&bomb, stdflate.BestCompression)
	_, _ = w.Write(make([]byte, 10<<20))
	require.NoError(t, w.Flush())
	zb := bomb.Bytes()[:bomb.Len()-4]
	const limit = 64 << 10
	most := 0
	_, err = s.inflate(zb, limit, func(n int) error { most = max(most, n); return nil })
	assert.ErrorIs(t, err, errInflateTooBig)
	assert.Equal(t, limit, most, "largest buffer asked for")

	// Exactly the limit inflates; one byte more does not.
	var exact bytes.Buffer
	w, _ = stdflate.NewWriter(&exact, stdflate.BestSpeed)
	_, _ = w.Write(bytes.Repeat([]byte("ab"), limit/2))
	require.NoError(t, w.Flush())
	out, err := s.inflate(exact.Bytes()[:exact.Len()-4], limit, func(int) error { return nil })
	require.NoError(t, err)
	assert.Len(t, out, limit)
	_, err = s.inflate(exact.Bytes()[:exact.Len()-4], limit-1, func(int) error { return nil })
	assert.ErrorIs(t, err, errInflateTooBig)

	out, err = s.inflate(zb, 20<<20, func(int) error { return nil })
	require.NoError(t, err)
	assert.Len(t, out, 10<<20)

	_, err = s.inflate([]byte{0xff, 0xff, 0xff, 0xff}, limit, func(int) error { return nil })
	assert.ErrorIs(t, err, errInflateBad)

	refused := errors.New("refused")
	_, err = s.inflate(zb, limit, func(int) error { return refused })
	assert.ErrorIs(t, err, refused)
}

// FuzzExtensions feeds Sec-WebSocket-Extensions values to the negotiation:
// it must not panic, and what it accepts must parse back to the same
// parameters.
func FuzzExtensions(f *testing.F) {
	for _, s := range []string{
		"permessage-deflate; client_max_window_bits",
		`permessage-deflate; server_max_window_bits="10"; client_no_context_takeover, x-foo`,
		"permessage-deflate; server_no_context_takeover; server_no_context_takeover",
		`a; b="c\"d", permessage-deflate`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, ok := negotiateDeflate([]string{s})
		if !ok {
			return
		}
		q, ok := negotiateDeflate([]string{p.response()})
		if !ok || q != p {
			t.Fatalf("%q: answer %q parses to %+v, %v", s, p.response(), q, ok)
		}
	})
}

// FuzzInflate feeds compressed messages to inflate: never a panic, never
// more than the limit.
func FuzzInflate(f *testing.F) {
	var b bytes.Buffer
	w, _ := stdflate.NewWriter(&b, stdflate.DefaultCompression)
	_, _ = w.Write([]byte(strings.Repeat("REGISTER sip:a SIP/2.0\r\n", 20)))
	_ = w.Flush()
	f.Add(b.Bytes()[:b.Len()-4])
	f.Add([]byte{0x00})
	f.Add([]byte{0x03, 0x00})
	s, err := New(Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		const limit = 4 << 10
		out, err := s.inflate(p, limit, func(n int) error {
			if n > limit {
				t.Fatalf("buffer of %d bytes asked for", n)
			}
			return nil
		})
		if err == nil && len(out) > limit {
			t.Fatalf("%d bytes out", len(out))
		}
	})
}
