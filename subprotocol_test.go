package sipws_test

import (
	"encoding"
	"encoding/json"
	"flag"
	"io"
	"testing"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// textValue is what MarshalText and UnmarshalText give the settings types.
type textValue interface {
	encoding.TextMarshaler
	String() string
}

// TestSettingsTextRoundTrip checks MarshalText and UnmarshalText of
// Subprotocol, CORSMode and KeepaliveMechanism: every value reads back as
// itself from its String form, flag.TextVar and encoding/json take their
// names, and an unknown name is an error that leaves the value as it was.
func TestSettingsTextRoundTrip(t *testing.T) {
	check := func(t *testing.T, v textValue, back func([]byte) (any, error)) {
		t.Helper()
		b, err := v.MarshalText()
		require.NoError(t, err)
		assert.Equal(t, v.String(), string(b))
		got, err := back(b)
		require.NoError(t, err, "%q", b)
		assert.Equal(t, v, got, "%q", b)
	}
	for _, sp := range []sipws.Subprotocol{0, sipws.SIP, sipws.MSRP, sipws.SIP | sipws.MSRP} {
		check(t, sp, func(b []byte) (any, error) {
			var x sipws.Subprotocol
			err := x.UnmarshalText(b)
			return x, err
		})
	}
	for _, m := range []sipws.CORSMode{sipws.CORSNone, sipws.CORSAny, sipws.CORSEcho} {
		check(t, m, func(b []byte) (any, error) {
			var x sipws.CORSMode
			err := x.UnmarshalText(b)
			return x, err
		})
	}
	for _, m := range []sipws.KeepaliveMechanism{sipws.KeepaliveNone, sipws.KeepalivePing, sipws.KeepalivePong} {
		check(t, m, func(b []byte) (any, error) {
			var x sipws.KeepaliveMechanism
			err := x.UnmarshalText(b)
			return x, err
		})
	}

	t.Run("flag.TextVar", func(t *testing.T) {
		var cfg sipws.Config
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		fs.TextVar(&cfg.Subprotocols, "subprotocols", sipws.SIP|sipws.MSRP, "")
		fs.TextVar(&cfg.CORS, "cors", sipws.CORSNone, "")
		fs.TextVar(&cfg.Keepalive, "keepalive", sipws.KeepalivePing, "")
		require.NoError(t, fs.Parse([]string{"-subprotocols", "MSRP, sip", "-cors", "2", "-keepalive", "pong"}))
		assert.Equal(t, sipws.SIP|sipws.MSRP, cfg.Subprotocols)
		assert.Equal(t, sipws.CORSEcho, cfg.CORS)
		assert.Equal(t, sipws.KeepalivePong, cfg.Keepalive)
		for _, bad := range [][]string{{"-subprotocols", "xmpp"}, {"-cors", "sometimes"}, {"-keepalive", "3"}} {
			assert.Error(t, fs.Parse(bad), "%q", bad)
		}
	})

	t.Run("json", func(t *testing.T) {
		var v struct {
			Subprotocols sipws.Subprotocol
			CORS         sipws.CORSMode
			Keepalive    sipws.KeepaliveMechanism
		}
		require.NoError(t, json.Unmarshal([]byte(`{"Subprotocols":"sip|msrp","CORS":"any","Keepalive":"none"}`), &v))
		assert.Equal(t, sipws.SIP|sipws.MSRP, v.Subprotocols)
		assert.Equal(t, sipws.CORSAny, v.CORS)
		assert.Equal(t, sipws.KeepaliveNone, v.Keepalive)
		b, err := json.Marshal(v)
		require.NoError(t, err)
		assert.JSONEq(t, `{"Subprotocols":"sip|msrp","CORS":"any","Keepalive":"none"}`, string(b))
	})

	t.Run("unknown name keeps the value", func(t *testing.T) {
		sp := sipws.SIP
		require.Error(t, sp.UnmarshalText([]byte("sip,xmpp")))
		assert.Equal(t, sipws.SIP, sp)
		c := sipws.CORSAny
		require.Error(t, c.UnmarshalText([]byte("everyone")))
		assert.Equal(t, sipws.CORSAny, c)
		k := sipws.KeepalivePong
		require.Error(t, k.UnmarshalText([]byte("sometimes")))
		assert.Equal(t, sipws.KeepalivePong, k)
		_, err := sipws.Subprotocol(0x80).MarshalText()
		assert.Error(t, err)
	})
}
