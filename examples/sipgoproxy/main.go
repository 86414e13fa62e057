// Command sipgoproxy is a registrar and proxy for browser phones written on
// github.com/emiago/sipgo — its Server's handlers, its client and server
// transactions — and mounted at /ws through the sipwssipgo Bridge, with
// sipws's flow tokens in its Record-Route. It serves the web phone page of
// examples/webphone at /.
//
//	go run ./examples/sipgoproxy -addr 127.0.0.1:8080
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sipws/sipws"
	"github.com/sipws/sipws/examples/internal/webpage"
	"github.com/sipws/sipws/sipwsprom"
	"github.com/sipws/sipws/sipwssipgo"
)

const (
	shutdownBound    = 10 * time.Second
	handshakeTimeout = 10 * time.Second
	maxHeaderBytes   = 16 << 10
	flowNode         = "sipgoproxy"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, stop, os.Args[1:], os.Stderr))
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// options are the parsed command line.
type options struct {
	addr, domain, admin  string
	tlsCert, tlsKey, web string
	selfSigned, webSet   bool
	allowOrigins         []string
	flowKey              []byte
	logLevel             slog.Level
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("sipgoproxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sipgoproxy [flags]\n\n"+
			"A SIP registrar and proxy for browser phones written on sipgo, with\n"+
			"sipws at /ws (through sipwssipgo) and the web phone page at /.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	var origins listFlag
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "TCP `address` to listen on (port 0 picks a free port)")
	fs.StringVar(&o.domain, "domain", "sipws.test", "SIP `domain` of the users (sip:USER@DOMAIN)")
	fs.Var(&origins, "allow-origin", "`pattern` of browser Origins allowed besides the page's own (repeatable): host[:port] or scheme://host[:port] with path.Match wildcards, \"*\" for any (default: same origin only)")
	fs.StringVar(&o.admin, "admin", "", "`address` of a private listener for the operations RPC (/RPC) and Prometheus metrics (/metrics); keep it on loopback (empty: none)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate `file`: serve https and wss (with -tls-key)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key `file` of -tls-cert")
	fs.BoolVar(&o.selfSigned, "self-signed", false, "serve https and wss with a certificate for 127.0.0.1/localhost made at start")
	fs.StringVar(&o.web, "web", webpage.DefaultDir, "`directory` of the web phone page")
	flowKey := fs.String("flow-key", "", "`hex` key (16+ bytes) of the flow tokens in Record-Route (empty: random)")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info or warn")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	fs.Visit(func(f *flag.Flag) { o.webSet = o.webSet || f.Name == "web" })
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return o, errors.New("-tls-cert and -tls-key go together")
	}
	if o.selfSigned && o.tlsCert != "" {
		return o, errors.New("-self-signed and -tls-cert exclude each other")
	}
	if o.domain == "" || strings.ContainsAny(o.domain, " \t;:@<>/") {
		return o, fmt.Errorf("-domain %q: want a host name", o.domain)
	}
	o.allowOrigins = origins
	if *flowKey != "" {
		k, err := hex.DecodeString(*flowKey)
		if err != nil || len(k) < 16 {
			return o, errors.New("-flow-key: want at least 16 bytes in hex")
		}
		o.flowKey = k
	}
	switch strings.ToLower(*logLevel) {
	case "debug":
		o.logLevel = slog.LevelDebug
	case "info":
		o.logLevel = slog.LevelInfo
	case "warn", "warning":
		o.logLevel = slog.LevelWarn
	default:
		return o, fmt.Errorf("-log-level %q: want debug, info or warn", *logLevel)
	}
	return o, nil
}

// sameOrigin is Config.CheckOrigin without -allow-origin: a browser's
// handshake must come from a page of this server (Origin's host equal to
// Host). A client that sends no Origin (not a browser) is let through. With
// -allow-origin, sipws's AllowedOrigins does the check (the page's own
// origin, and the patterns).
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return true
	}
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

// app is the wired-up program.
type app struct {
	ua      *sipgo.UserAgent
	bridge  *sipwssipgo.Bridge
	proxy   *proxy
	ws      *sipws.Server
	metrics *sipwsprom.Metrics
	page    *webpage.Page
}

func newApp(o options, log *slog.Logger) (*app, error) {
	flowKey := o.flowKey
	if flowKey == nil {
		flowKey = make([]byte, 32)
		_, _ = rand.Read(flowKey)
	}
	ft, err := sipws.NewFlowTokens(flowNode, flowKey)
	if err != nil {
		return nil, err
	}
	server := "sipws-sipgoproxy (sipws/" + sipws.Version + ", sipgo)"
	ua, err := sipgo.NewUA(append(sipwssipgo.UserAgentOptions(),
		sipgo.WithUserAgent(server), sipgo.WithUserAgentHostname(o.domain))...)
	if err != nil {
		return nil, err
	}
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(log.With("component", "sipgo")))
	if err != nil {
		_ = ua.Close()
		return nil, err
	}
	client, err := sipgo.NewClient(ua, sipgo.WithClientHostname(o.domain))
	if err != nil {
		_ = ua.Close()
		return nil, err
	}
	bridge, err := sipwssipgo.New(ua, sipwssipgo.Config{Logger: log.With("component", "bridge")})
	if err != nil {
		_ = ua.Close()
		return nil, err
	}
	p := &proxy{domain: o.domain, server: server, log: log.With("component", "sip"), bridge: bridge,
		client: client, reg: newRegistrar(), now: time.Now}
	p.handle(srv)
	metrics := sipwsprom.New()
	var checkOrigin func(*http.Request) bool
	if len(o.allowOrigins) == 0 {
		checkOrigin = sameOrigin
	}
	ws, err := sipws.New(sipws.Config{
		Observer:       metrics,
		Subprotocols:   sipws.SIP,
		FlowTokens:     ft,
		CheckOrigin:    checkOrigin,
		AllowedOrigins: o.allowOrigins,
		MaxMessageSize: sipwssipgo.MaxMessageSize(),
		Logger:         log.With("component", "sipws"),
		OnMessage:      bridge.OnMessage,
		OnClosed: func(ev sipws.CloseEvent) {
			if n := p.reg.dropConn(ev.ID); n > 0 {
				p.log.Info("bindings dropped with their connection", "conn", ev.ID, "bindings", n)
			}
		},
	})
	if err != nil {
		_ = bridge.Close()
		_ = ua.Close()
		return nil, err
	}
	p.ws = ws
	metrics.Watch(ws)
	return &app{ua: ua, bridge: bridge, proxy: p, ws: ws, metrics: metrics,
		page: &webpage.Page{Dir: o.web, Log: log.With("component", "web")}}, nil
}

func (a *app) handler() http.Handler {
	mux := http.NewServeMux()
	a.page.Register(mux)
	mux.HandleFunc("GET /api/config", a.serveConfig)
	mux.HandleFunc("GET /api/online", a.serveOnline)
	mux.Handle("/ws", a.ws)
	return mux
}

// close ends the sipgo side, after sipws has shut down.
func (a *app) close() {
	_ = a.bridge.Close()
	_ = a.ua.Close()
}

func run(ctx context.Context, stopSignals func(), args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "sipgoproxy: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))
	slog.SetDefault(log) // sipgo's own logs (sip.DefaultLogger) go there too
	if !o.webSet && !webpage.DirOK(o.web) && webpage.DirOK("../webphone/web") {
		o.web = "../webphone/web" // started from examples/sipgoproxy
	}
	if !webpage.DirOK(o.web) {
		log.Warn("no index.html in the web directory: the page will not be served (set -web)", "web", o.web)
	}
	a, err := newApp(o, log)
	if err != nil {
		fmt.Fprintf(stderr, "sipgoproxy: %v\n", err)
		return 2
	}
	defer a.close()
	if _, err := a.page.BuildJsSIP(); err != nil {
		log.Warn("JsSIP not bundled: the page cannot register until it is installed", "hint", webpage.NPMHint, "err", err)
	}

	ln, scheme, err := webpage.Listen(o.addr, webpage.TLS{CertFile: o.tlsCert, KeyFile: o.tlsKey, SelfSigned: o.selfSigned}, log)
	if err != nil {
		fmt.Fprintf(stderr, "sipgoproxy: %v\n", err)
		return 1
	}
	errorLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	hsrv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: handshakeTimeout, ReadTimeout: handshakeTimeout,
		IdleTimeout: 60 * time.Second, MaxHeaderBytes: maxHeaderBytes, ErrorLog: errorLog}
	var admin *http.Server
	if o.admin != "" {
		aln, err := net.Listen("tcp", o.admin)
		if err != nil {
			_ = ln.Close()
			fmt.Fprintf(stderr, "sipgoproxy: -admin: %v\n", err)
			return 1
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(a.metrics)
		mux := http.NewServeMux()
		rpcOpts := &sipws.RPCOptions{}
		var hosts []string
		if h, _, err := net.SplitHostPort(o.admin); err == nil && h != "" {
			rpcOpts.AllowedHosts = []string{h}
			hosts = []string{strings.ToLower(h)}
		}
		a.adminRoutes(mux, hosts...)
		mux.Handle("/RPC", sipws.NewRPCHandler(a.ws, rpcOpts))
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		admin = &http.Server{Handler: mux, ReadHeaderTimeout: handshakeTimeout, ReadTimeout: handshakeTimeout, ErrorLog: errorLog}
		log.Info("admin: operations RPC on http://"+aln.Addr().String()+"/RPC, metrics on /metrics, /api/connections and /api/bindings", "addr", aln.Addr().String())
		go func() { _ = admin.Serve(aln) }()
	}

	log.Info("listening on "+scheme+"://"+ln.Addr().String()+"/", "addr", ln.Addr().String(), "domain", o.domain, "web", o.web)
	served := make(chan error, 1)
	go func() { served <- hsrv.Serve(ln) }()

	status := 0
	select {
	case err := <-served:
		log.Error("serve", "err", err)
		status = 1
	case <-ctx.Done():
		stopSignals()
		log.Info("signal received, shutting down", "bound", shutdownBound)
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownBound)
	defer cancel()
	var wg sync.WaitGroup
	var herr, werr error
	wg.Go(func() { herr = hsrv.Shutdown(sctx) })
	wg.Go(func() { werr = a.ws.Shutdown(sctx) })
	if admin != nil {
		wg.Go(func() { _ = admin.Shutdown(sctx) })
	}
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
