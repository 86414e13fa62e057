package main

import (
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHTTP2Flag: -http2 needs TLS and GODEBUG=http2xconnect=1 in the
// environment (Go's HTTP/2 server reads it when the process starts, so the
// webphone cannot set it itself), and says so; with both it is on.
func TestHTTP2Flag(t *testing.T) {
	t.Setenv("GODEBUG", "")
	_, err := parseFlags([]string{"-http2", "-self-signed"}, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "GODEBUG=http2xconnect=1")

	t.Setenv("GODEBUG", "http2xconnect=1")
	_, err = parseFlags([]string{"-http2"}, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "-tls-cert or -self-signed")

	o, err := parseFlags([]string{"-http2", "-self-signed"}, io.Discard)
	require.NoError(t, err)
	assert.True(t, o.http2)
}
