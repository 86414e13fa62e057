package sipws_test

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHandshakeAllowedOrigins checks Config.AllowedOrigins over real
// handshakes: the server's own origin, the patterns (host, host:port,
// scheme://host, "*", "null") and no Origin at all are let through; any
// other Origin is refused with 403 naming it, before CheckOrigin is asked.
func TestHandshakeAllowedOrigins(t *testing.T) {
	var checked atomic.Int32
	patterns := []string{"*.app.example", "cdn.example:8443", "https://try.jssip.example", "null"}
	ts := startServer(t, sipws.Config{
		AllowedOrigins: patterns,
		CheckOrigin: func(r *http.Request) bool {
			checked.Add(1)
			return r.Header.Get("Origin") != "https://blocked.app.example"
		},
	})
	for _, tc := range []struct {
		origin string // "-" for none
		ok     bool
	}{
		{"-", true},
		{"http://" + ts.Addr, true}, // same origin: host:port equal to Host
		{"http://" + strings.ToUpper(ts.Addr), true},
		{"https://phone.app.example", true},
		{"HTTPS://PHONE.APP.EXAMPLE", true},
		{"https://a.b.app.example", true}, // * matches dots, as path.Match does
		{"https://app.example", false},
		{"https://phone.app.example:8443", false}, // the pattern has no port
		{"https://cdn.example:8443", true},
		{"https://cdn.example", false},
		{"https://try.jssip.example", true},
		{"http://try.jssip.example", false}, // the pattern names https
		{"null", true},
		{"https://evil.example", false},
		{"https://phone.app.example.evil.example", false},
		{"", false}, // an empty Origin header is not a missing one
		{"https://phone.app.example/path", false},
		{"https://blocked.app.example", false}, // allowed here, refused by CheckOrigin
	} {
		func() {
			req := newHSRequest(ts.Addr, "sip")
			if tc.origin != "-" {
				req.add("Origin", tc.origin)
			}
			before := hsBefore(ts)
			calls := checked.Load()
			res := hsDial(t, ts.Addr, http.MethodGet, req.String())
			if tc.ok {
				t.Logf("Origin %q: want 101", tc.origin)
				hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)
				assert.Equal(t, calls+1, checked.Load(), "Origin %q: CheckOrigin not asked after AllowedOrigins", tc.origin)
				return
			}
			t.Logf("Origin %q: want 403", tc.origin)
			hsExpectRefused(t, ts, res, before, hsRefusal{status: http.StatusForbidden, body: []string{"not allowed"}})
			if tc.origin != "https://blocked.app.example" {
				assert.Equal(t, calls, checked.Load(), "Origin %q: CheckOrigin asked about an origin AllowedOrigins refused", tc.origin)
			}
		}()
	}
}

// TestAllowedOriginsAny checks that "*" lets any Origin through, and that
// without AllowedOrigins (and CheckOrigin) no Origin is refused.
func TestAllowedOriginsAny(t *testing.T) {
	for _, patterns := range [][]string{{"*"}, nil} {
		ts := startServer(t, sipws.Config{AllowedOrigins: patterns})
		for _, origin := range []string{"https://anything.example", "null", "http://127.0.0.1:1"} {
			req := newHSRequest(ts.Addr, "sip").add("Origin", origin)
			res := hsDial(t, ts.Addr, http.MethodGet, req.String())
			hsExpectOpened(t, ts, res, req.get("Sec-WebSocket-Key"), sipws.SIP)
		}
	}
}

// TestAllowedOriginsConfigErrors checks that an empty or malformed pattern
// is a ConfigError naming the field.
func TestAllowedOriginsConfigErrors(t *testing.T) {
	for _, p := range []string{"", "[a-", "https://\\"} {
		_, err := sipws.New(sipws.Config{AllowedOrigins: []string{"ok.example", p}})
		var ce *sipws.ConfigError
		require.ErrorAs(t, err, &ce, "pattern %q", p)
		assert.Equal(t, "AllowedOrigins", ce.Field)
	}
	_, err := sipws.New(sipws.Config{AllowedOrigins: []string{"*.example", "https://a.example:*", "null", "*"}})
	assert.NoError(t, err)
}
