package sipwsprom_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sipws/sipws"
	"github.com/sipws/sipws/sipwsprom"
)

// Example wires a Metrics into a server and serves /metrics on an admin
// listener of its own, bound to loopback, apart from the public listener
// that takes the WebSocket handshakes: the metrics tell anyone who can read
// them how many users are connected, and, like the RPC handler, have no
// authentication of their own.
func Example() {
	m := sipwsprom.New()
	srv, err := sipws.New(sipws.Config{Observer: m})
	if err != nil {
		panic(err)
	}
	m.Watch(srv)
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()

	// The public listener: WebSocket handshakes, and nothing else.
	publicLn, err := net.Listen("tcp", "127.0.0.1:0") // in production, e.g. ":443" with TLS
	if err != nil {
		panic(err)
	}
	public := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second}
	go public.Serve(publicLn)
	defer public.Close()

	// The admin listener, on loopback only: /metrics (and the RPC handler
	// of sipws.NewRPCHandler, if the host uses it).
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	adminMux := http.NewServeMux()
	adminMux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	adminLn, err := net.Listen("tcp", "127.0.0.1:0") // e.g. "127.0.0.1:9090"
	if err != nil {
		panic(err)
	}
	admin := &http.Server{Handler: adminMux, ReadHeaderTimeout: 10 * time.Second}
	go admin.Serve(adminLn)
	defer admin.Close()

	resp, err := http.Get("http://" + adminLn.Addr().String() + "/metrics")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(body)) {
		if strings.HasPrefix(line, "sipws_ws_current_connections ") ||
			strings.HasPrefix(line, "# TYPE sipws_ws_received_frames ") ||
			strings.HasPrefix(line, "# TYPE sipws_handshake_duration_seconds ") {
			fmt.Print(line)
		}
	}
	// Output:
	// # TYPE sipws_handshake_duration_seconds histogram
	// sipws_ws_current_connections 0
	// # TYPE sipws_ws_received_frames counter
}
