// Command echo is a SIP/MSRP-over-WebSocket echo server built on sipws: it
// accepts WebSocket handshakes on every path and sends every message back on
// its connection with its own type (text stays text, binary stays binary).
// It is a demo, a manual test target for browser phones (JsSIP, SIP.js) and
// tools like websocat, and a template for a host: flags map one to one onto
// sipws.Config.
//
//	go run ./examples/echo -addr 127.0.0.1:8080
//	go run ./examples/echo -h
//
// It logs with log/slog to stderr; its first line is "listening on ADDR" with
// the address actually bound (useful with port 0). SIGINT or SIGTERM stops
// it: new handshakes are refused, every client gets a close frame with 1001
// "Going away", and it exits 0 once they are gone or 10 s have passed. A
// second signal during that time kills it at once. Invalid flags exit 2.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sipws/sipws"
	"github.com/sipws/sipws/sipwsprom"
)

// shutdownBound bounds the graceful shutdown after SIGINT/SIGTERM.
const shutdownBound = 10 * time.Second

// maxHeaderBytes bounds a handshake request's headers. A SIP-over-WebSocket
// handshake is a few hundred bytes; cookies and an Authorization header fit
// comfortably in 16 KiB.
const maxHeaderBytes = 16 << 10

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, stop, os.Args[1:], os.Stderr))
}

// options are the parsed command line.
type options struct {
	addr             string
	admin            string
	tlsCert, tlsKey  string
	handshakeTimeout time.Duration
	logLevel         slog.Level
	cfg              sipws.Config
}

// usageError is a bad command line or configuration: exit status 2.
type usageError struct {
	err      error
	reported bool // the flag package has already printed it, with the usage
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// parseFlags parses args into options. It returns flag.ErrHelp for -h.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("echo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: echo [flags]\n\n"+
			"A SIP/MSRP-over-WebSocket echo server: every message comes back on its\n"+
			"connection with its own type. Handshakes are accepted on every path.\n\n"+
			"Flags:\n")
		fs.PrintDefaults()
	}

	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "TCP `address` to listen on (port 0 picks a free port)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate `file` (with -tls-key): serve wss (TLS 1.2+) instead of ws")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key `file` of -tls-cert")
	fs.StringVar(&o.admin, "admin", "", "`address` of the admin listener serving /RPC (JSON-RPC: ws.dump, ws.close, stats.get_statistics, …) and /metrics (Prometheus), e.g. 127.0.0.1:8081, where sipwsctl looks by default; empty: off. It has no authentication: keep it on loopback")
	fs.IntVar(&o.cfg.MaxConns, "max-conns", 0, "cap on connections open at once; past it handshakes get 503 + Retry-After (0: no cap)")
	fs.IntVar(&o.cfg.MaxConnsPerIP, "max-conns-per-ip", 0, "cap on connections open at once from one client IP, or one IPv6 prefix of -ipv6-prefix-len bits (0: no cap)")
	fs.IntVar(&o.cfg.IPv6PrefixLen, "ipv6-prefix-len", 0, "`bits` of the IPv6 prefix that -max-conns-per-ip counts as one client, 1 to 128 (IPv4 clients are counted by address; 0: 64)")
	trusted := fs.String("trusted-proxies", "", "comma-separated `CIDRs` of reverse proxies whose -forwarded-header is believed")
	fs.StringVar(&o.cfg.ForwardedHeader, "forwarded-header", "X-Forwarded-For", "the one `header` the trusted proxies set to name the client: X-Forwarded-For (nginx, HAProxy; with X-Forwarded-Proto), Forwarded (RFC 7239) or X-Real-IP; the others are ignored")
	sipFraming := fs.Bool("sip-framing", false, "check that each message holds exactly one SIP message (sip) or MSRP chunk (msrp); others are logged and dropped")
	fs.Int64Var(&o.cfg.MaxMessageSize, "max", 0, "largest message accepted, in `bytes`, at most 64 MiB; a larger one closes the connection with 1009 (0: 64 KiB)")
	fs.TextVar(&o.cfg.Subprotocols, "subprotocols", sipws.SIP|sipws.MSRP, "comma-separated `list` of enabled sub-protocols: sip, msrp")
	fs.TextVar(&o.cfg.ImplicitSubprotocol, "implicit-subprotocol", sipws.Subprotocol(0), "serve a client that offers no sub-protocol as this `one` (sip or msrp), naming none in the 101: for generic tools such as the Autobahn suite; empty: refuse it with 400")
	fs.BoolVar(&o.cfg.Compression, "compression", false, "negotiate permessage-deflate (RFC 7692) with clients that offer it, as browsers do; leave it off where attacker-chosen text shares messages with secrets (CRIME/BREACH, see SECURITY.md)")
	fs.TextVar(&o.cfg.CORS, "cors", sipws.CORSNone, "Access-Control-Allow-Origin of the 101: none, any or echo")
	fs.Func("allow-origin", "browser Origin `pattern` also allowed besides same-origin pages (repeatable; host[:port] or scheme://host[:port], path.Match wildcards, \"*\" for any); without it no Origin is checked", func(v string) error {
		o.cfg.AllowedOrigins = append(o.cfg.AllowedOrigins, v)
		return nil
	})
	fs.TextVar(&o.cfg.Keepalive, "keepalive", sipws.KeepalivePing, "keepalive `mechanism`: none, ping or pong")
	fs.DurationVar(&o.cfg.KeepaliveTimeout, "keepalive-timeout", 0, "idle time after which a keepalive is sent (0: 3m0s)")
	fs.DurationVar(&o.cfg.KeepaliveInterval, "keepalive-interval", 0, "how often due keepalives are looked for (0: 1s)")
	fs.IntVar(&o.cfg.KeepaliveWorkers, "keepalive-workers", 0, "number of keepalive goroutines (0: 1)")
	pingData := fs.String("ping-data", "", "payload of keepalive Pings and Pongs, at most 125 bytes (empty: \"sipws/"+sipws.Version+"\")")
	fs.DurationVar(&o.cfg.PongWait, "pong-wait", 0, "how long a peer may stay silent after a keepalive Ping (0: 5s or the keepalive timeout when shorter)")
	fs.DurationVar(&o.cfg.IdleTimeout, "idle-timeout", 0, "with -keepalive pong or none, close a connection that sent nothing for this long (0: never)")
	fs.DurationVar(&o.cfg.CloseTimeout, "close-timeout", 0, "wait for the peer's close reply and FIN (0: 2s)")
	fs.DurationVar(&o.cfg.WriteTimeout, "write-timeout", 0, "bound of every write to a socket (0: 10s)")
	fs.DurationVar(&o.cfg.FrameTimeout, "frame-timeout", 0, "bound between the first and last byte of one frame (0: 30s)")
	fs.DurationVar(&o.cfg.MessageTimeout, "message-timeout", 0, "bound between the first and last frame of one message (0: 60s, or -frame-timeout when longer)")
	fs.Int64Var(&o.cfg.MaxPartialBytes, "max-partial-bytes", 0, "`bytes` all connections together may hold in messages still being received; past it the largest holders are closed with 1009 (0: 64 MiB, or 4 × -max when larger)")
	fs.IntVar(&o.cfg.SendQueueSize, "send-queue", 0, "`bytes` queued for one connection before it is closed as a slow consumer (0: 1 MiB)")
	fs.DurationVar(&o.handshakeTimeout, "handshake-timeout", 10*time.Second, "bound on reading a handshake request (ReadHeaderTimeout and ReadTimeout of the HTTP server)")
	keepHeaders := fs.String("keep-headers", "Origin,User-Agent", "comma-separated handshake `headers` each connection keeps (Conn.Header); empty: none")
	fs.IntVar(&o.cfg.MaxKeptHeaderBytes, "max-kept-header-bytes", 0, "`bytes` of its handshake request (URI, Host, -keep-headers) a connection keeps at most (0: 4 KiB)")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info or warn")
	fs.BoolVar(&o.cfg.VerboseList, "verbose-list", false, "log each keepalive pass (at debug level: use with -log-level debug)")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, usageError{err: err, reported: true}
	}
	if fs.NArg() > 0 {
		return o, usageError{err: fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}

	if o.cfg.MaxMessageSize < 0 {
		return o, usageError{err: fmt.Errorf("-max %d: must not be negative", o.cfg.MaxMessageSize)}
	}
	for cidr := range strings.SplitSeq(*trusted, ",") {
		if cidr = strings.TrimSpace(cidr); cidr == "" {
			continue
		}
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			return o, usageError{err: fmt.Errorf("-trusted-proxies: %w", err)}
		}
		o.cfg.TrustedProxies = append(o.cfg.TrustedProxies, p)
	}
	o.cfg.KeepHeaders = []string{}
	for name := range strings.SplitSeq(*keepHeaders, ",") {
		if name = strings.TrimSpace(name); name != "" {
			o.cfg.KeepHeaders = append(o.cfg.KeepHeaders, name) // sipws.New checks it
		}
	}
	if *sipFraming {
		o.cfg.Framing = sipws.FramingReport
	}
	if *pingData != "" {
		o.cfg.PingData = []byte(*pingData)
	}
	switch strings.ToLower(*logLevel) {
	case "debug":
		o.logLevel = slog.LevelDebug
	case "info":
		o.logLevel = slog.LevelInfo
	case "warn", "warning":
		o.logLevel = slog.LevelWarn
	default:
		return o, usageError{err: fmt.Errorf("-log-level %q: want debug, info or warn", *logLevel)}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return o, usageError{err: errors.New("-tls-cert and -tls-key go together")}
	}
	if o.handshakeTimeout <= 0 {
		return o, usageError{err: fmt.Errorf("-handshake-timeout %v: must be positive", o.handshakeTimeout)}
	}
	return o, nil
}

// run is the whole program; it returns the exit status. ctx ends at the first
// SIGINT or SIGTERM; stopSignals restores their default action (so that a
// second one kills the process).
func run(ctx context.Context, stopSignals func(), args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		if ue, ok := err.(usageError); !ok || !ue.reported {
			fmt.Fprintf(stderr, "echo: %v\n", err)
		}
		return 2
	}

	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	if o.cfg.VerboseList && o.logLevel > slog.LevelDebug {
		log.Warn("-verbose-list logs at debug level: add -log-level debug to see it")
	}
	o.cfg.Logger = log.With("component", "sipws")
	o.cfg.OnMessage = func(c *sipws.Conn, m sipws.Message) {
		// The echo: same type, same bytes. It cannot be too big (it came in
		// under the same limit); it fails when the connection is closing, or
		// when the peer does not read its echoes (ErrSendQueueFull, and the
		// library closes the connection).
		if err := c.SendMessage(m.Type, m.Data); err != nil {
			log.Debug("echo not sent", "conn", c.ID(), "err", err)
		}
	}
	metrics := sipwsprom.New()
	o.cfg.Observer = metrics
	wsrv, err := sipws.New(o.cfg)
	if err != nil {
		fmt.Fprintf(stderr, "echo: %v\n", err)
		return 2
	}
	metrics.Watch(wsrv)

	var admin *http.Server
	if o.admin != "" {
		aln, err := net.Listen("tcp", o.admin)
		if err != nil {
			fmt.Fprintf(stderr, "echo: admin: %v\n", err)
			return 1
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(metrics)
		mux := http.NewServeMux()
		// Besides loopback names, the RPC answers to the host -admin names.
		rpcOpts := &sipws.RPCOptions{}
		if host, _, err := net.SplitHostPort(o.admin); err == nil && host != "" {
			rpcOpts.AllowedHosts = []string{host}
		}
		mux.Handle("/RPC", sipws.NewRPCHandler(wsrv, rpcOpts))
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		admin = &http.Server{Handler: mux, ReadHeaderTimeout: o.handshakeTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
		log.Info("admin listening on "+aln.Addr().String(), "admin", aln.Addr().String())
		go func() { _ = admin.Serve(aln) }()
		defer admin.Close()
	}

	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		fmt.Fprintf(stderr, "echo: %v\n", err)
		return 1
	}
	hsrv := &http.Server{
		Handler: wsrv, // every path
		// The handshake is the only HTTP this server speaks, and until it
		// completes a connection costs a goroutine, a socket and buffers
		// while proving nothing. These bounds make sure that a client that
		// sends half a request (slowloris), or connects and sends nothing,
		// or keeps an HTTP connection open without upgrading it, holds
		// nothing for long. After the 101 the connection is hijacked:
		// sipws clears these deadlines and applies its own (FrameTimeout,
		// WriteTimeout, keepalive).
		ReadHeaderTimeout: o.handshakeTimeout,
		ReadTimeout:       o.handshakeTimeout,
		IdleTimeout:       o.handshakeTimeout,
		// Headers beyond this get 431 instead of growing a buffer.
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			fmt.Fprintf(stderr, "echo: %v\n", err)
			return 2
		}
		// A safe configuration for wss: TLS 1.2 or later with Go's default
		// cipher suites, and ALPN limited to HTTP/1.1 — WebSocket (RFC 6455)
		// upgrades an HTTP/1.1 request; a browser that negotiated h2 could
		// not open one here.
		hsrv.TLSConfig = &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"http/1.1"},
		}
		ln = tls.NewListener(ln, hsrv.TLSConfig)
	}
	addr := ln.Addr().String()
	log.Info("listening on "+addr, "addr", addr, "tls", o.tlsCert != "",
		"subprotocols", o.cfg.Subprotocols, "max_message_size", o.cfg.MaxMessageSize, "keepalive", o.cfg.Keepalive)

	served := make(chan error, 1)
	go func() { served <- hsrv.Serve(ln) }()

	status := 0
	select {
	case err := <-served:
		// Serve returned on its own: the listener failed.
		log.Error("serve", "err", err)
		status = 1
	case <-ctx.Done():
		stopSignals() // a second signal kills the process
		log.Info("signal received, shutting down", "bound", shutdownBound)
	}

	sctx, cancel := context.WithTimeout(context.Background(), shutdownBound)
	defer cancel()
	// Both at once: http.Server.Shutdown stops accepting and waits for
	// requests in progress (handshakes not yet hijacked) but does not know
	// hijacked connections; sipws Shutdown closes those with 1001 and waits
	// for their close replies.
	var wg sync.WaitGroup
	var herr, werr error
	wg.Go(func() { herr = hsrv.Shutdown(sctx) })
	wg.Go(func() { werr = wsrv.Shutdown(sctx) })
	wg.Wait()
	if herr != nil {
		_ = hsrv.Close()
	}
	if herr != nil || werr != nil {
		log.Warn("shutdown bound reached, connections dropped", "http", herr, "websocket", werr)
	} else {
		log.Info("shut down")
	}
	return status
}
