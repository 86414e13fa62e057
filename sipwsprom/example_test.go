package sipwsprom_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sipws/sipws"
	"github.com/sipws/sipws/sipwsprom"
)

// Example wires a Metrics into a server and serves /metrics.
func Example() {
	m := sipwsprom.New()
	srv, err := sipws.New(sipws.Config{Observer: m})
	if err != nil {
		panic(err)
	}
	m.Watch(srv)

	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", srv) // WebSocket handshakes
	hs := httptest.NewServer(mux)
	defer hs.Close()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}()

	resp, err := http.Get(hs.URL + "/metrics")
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
