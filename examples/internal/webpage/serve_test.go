package webpage

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestAdminOnly(t *testing.T) {
	h := AdminOnly(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }, "admin.example")
	for host, want := range map[string]int{
		"127.0.0.1:8081":      http.StatusOK,
		"127.9.9.9":           http.StatusOK,
		"[::1]:8081":          http.StatusOK,
		"[::ffff:127.0.0.1]":  http.StatusOK,
		"LOCALHOST.:8081":     http.StatusOK,
		"admin.example:8081":  http.StatusOK,
		"rebind.evil.example": http.StatusMisdirectedRequest,
		"10.0.0.1:8081":       http.StatusMisdirectedRequest,
		"":                    http.StatusMisdirectedRequest,
		"localhost.evil":      http.StatusMisdirectedRequest,
	} {
		r := httptest.NewRequest("GET", "/api/connections", nil)
		r.Host = host
		w := httptest.NewRecorder()
		h(w, r)
		assert.Equal(t, want, w.Code, "Host %q", host)
	}
}

func TestListen(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	ln, scheme, err := Listen("127.0.0.1:0", TLS{}, log)
	require.NoError(t, err)
	assert.Equal(t, "http", scheme)
	require.NoError(t, ln.Close())

	ln, scheme, err = Listen("127.0.0.1:0", TLS{SelfSigned: true, HTTP2: true}, log)
	require.NoError(t, err)
	assert.Equal(t, "https", scheme)
	require.NoError(t, ln.Close())

	_, _, err = Listen("127.0.0.1:0", TLS{CertFile: "no-such.pem", KeyFile: "no-such.key"}, log)
	assert.ErrorContains(t, err, "TLS certificate")
}
