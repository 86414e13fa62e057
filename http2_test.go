package sipws_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHTTP2BrowsersUseHTTP1: what the README's HTTP/2 section says of Go's
// defaults. On a TLS http.Server with HTTP/2 on and sipws mounted, the
// server does not advertise RFC 8441's Extended CONNECT
// (SETTINGS_ENABLE_CONNECT_PROTOCOL), so a browser never sends a WebSocket
// handshake over HTTP/2, and the handshake it sends over HTTP/1.1 to the
// same listener gets 101. Should a Go release advertise it by default, this
// fails, and sipws must support RFC 8441 or tell hosts to turn it off.
func TestHTTP2BrowsersUseHTTP1(t *testing.T) {
	const timeout = 5 * time.Second
	srv, err := sipws.New(sipws.Config{})
	require.NoError(t, err)
	h := httptest.NewUnstartedServer(srv)
	h.EnableHTTP2 = true
	h.StartTLS()
	t.Cleanup(func() {
		h.Close()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
	})
	addr := strings.TrimPrefix(h.URL, "https://")
	pool := x509.NewCertPool()
	pool.AddCert(h.Certificate())

	// HTTP/2: the server's first SETTINGS frame.
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", addr,
		&tls.Config{RootCAs: pool, NextProtos: []string{"h2", "http/1.1"}})
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(timeout)))
	require.Equal(t, "h2", c.ConnectionState().NegotiatedProtocol, "HTTP/2 should be on for this check to mean anything")
	// The client preface and an empty SETTINGS frame (RFC 9113 §3.4, §6.5).
	_, err = io.WriteString(c, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
	require.NoError(t, err)
	settings := readServerSettings(t, c)
	const settingsEnableConnectProtocol = 0x8 // RFC 8441 §3
	assert.NotEqual(t, uint32(1), settings[settingsEnableConnectProtocol],
		"the server advertises Extended CONNECT: browsers will send WebSocket handshakes over HTTP/2, which sipws refuses")

	// HTTP/1.1 on the same listener, with the ALPN list a browser sends
	// for a WebSocket: the handshake succeeds.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	d := ws.Dialer{Protocols: []string{"sip"}, TLSConfig: &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}}}
	conn, _, hs, err := d.Dial(ctx, "wss://"+addr+"/")
	require.NoError(t, err, "wss handshake over HTTP/1.1 on an HTTP/2-enabled listener")
	assert.Equal(t, "sip", hs.Protocol)
	require.NoError(t, conn.Close())
}

// readServerSettings reads HTTP/2 frames from c until the server's first
// SETTINGS frame that is not an acknowledgment, and returns its parameters.
func readServerSettings(t *testing.T, c net.Conn) map[uint16]uint32 {
	t.Helper()
	for range 16 {
		var hdr [9]byte // length (24 bits), type, flags, stream (RFC 9113 §4.1)
		_, err := io.ReadFull(c, hdr[:])
		require.NoError(t, err)
		length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
		require.LessOrEqual(t, length, 1<<14, "frame length")
		payload := make([]byte, length)
		_, err = io.ReadFull(c, payload)
		require.NoError(t, err)
		const typeSettings, flagAck = 0x4, 0x1
		if hdr[3] != typeSettings || hdr[4]&flagAck != 0 {
			continue
		}
		require.Zero(t, length%6, "SETTINGS payload length")
		params := make(map[uint16]uint32)
		for p := payload; len(p) > 0; p = p[6:] {
			params[binary.BigEndian.Uint16(p)] = binary.BigEndian.Uint32(p[2:])
		}
		return params
	}
	t.Fatal("no SETTINGS frame from the server in its first 16 frames")
	return nil
}
