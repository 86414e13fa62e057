package webpage

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// TLS says how an example's public listener is secured: a certificate and
// key from files, a self-signed certificate made at start, or neither
// (plain HTTP).
type TLS struct {
	CertFile, KeyFile string
	SelfSigned        bool
	// HTTP2 offers h2 by ALPN besides http/1.1, for WebSocket over HTTP/2
	// (RFC 8441); without it only http/1.1 is offered.
	HTTP2 bool
}

// Listen listens on addr, with TLS as t says, and returns the listener and
// its URL scheme ("http" or "https").
func Listen(addr string, t TLS, log *slog.Logger) (net.Listener, string, error) {
	var conf *tls.Config
	switch {
	case t.SelfSigned:
		host, _, _ := net.SplitHostPort(addr)
		cert, fp, err := SelfSigned(host)
		if err != nil {
			return nil, "", err
		}
		log.Info("self-signed certificate made", "sha256", fp)
		conf = &tls.Config{Certificates: []tls.Certificate{cert}}
	case t.CertFile != "":
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, "", fmt.Errorf("TLS certificate: %w", err)
		}
		conf = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	if conf == nil {
		return ln, "http", nil
	}
	conf.MinVersion = tls.VersionTLS12
	conf.NextProtos = []string{"http/1.1"} // WebSocket over HTTP/1.1
	if t.HTTP2 {
		conf.NextProtos = []string{"h2", "http/1.1"} // and over HTTP/2 (RFC 8441)
	}
	return tls.NewListener(ln, conf), "https", nil
}

// AdminOnly wraps an operator's view of the -admin listener: as for the
// sipws RPC, a request must name a loopback address, localhost or one of
// hosts in its Host header, or it gets 421 (DNS rebinding).
func AdminOnly(h http.HandlerFunc, hosts ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !AdminHostOK(r.Host, hosts) {
			http.Error(w, "Host "+strconv.Quote(r.Host)+" is not allowed", http.StatusMisdirectedRequest)
			return
		}
		h(w, r)
	}
}

// AdminHostOK reports whether Host hostport names a loopback address,
// localhost or one of hosts.
func AdminHostOK(hostport string, hosts []string) bool {
	name := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.ToLower(strings.Trim(name, "[]")), ".")
	if name == "localhost" || (name != "" && slices.Contains(hosts, name)) {
		return true
	}
	ip, err := netip.ParseAddr(name)
	return err == nil && ip.Unmap().IsLoopback()
}
