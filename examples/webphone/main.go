// Command webphone is the sipws demo: a SIP registrar and proxy for browser
// phones, over WebSocket, with the web page of a phone. Open it in two
// browser tabs, register as two users, and call or chat from one to the
// other.
//
//	make demo                                   # npm ci (when needed) and the line below
//	go run ./examples/webphone -addr 127.0.0.1:8080
//	go run ./examples/webphone -self-signed     # https and wss
//
// It serves the page at / (from -web, with JsSIP from its node_modules,
// bundled at start), SIP over WebSocket at /ws, and JSON at /api/config
// and /api/online (the names of the registered users, paged). -admin serves
// the operations RPC (ws.dump, ws.close, …), Prometheus metrics and the
// operator's views /api/connections and /api/bindings on another, private,
// listener. SIP messages are parsed and built with
// github.com/emiago/sipgo/sip; everything else of SIP here — the location
// service, the routing by flow token, the transactions, digest
// authentication — is in this directory.
//
// With -users FILE (user:password, or htdigest user:realm:HA1 lines; see
// auth.go) every user must prove who they are: REGISTER is challenged with
// 401, other requests from a connection that has not proved its From user
// with 407 (RFC 3261 §22, RFC 8760: MD5 and SHA-256). Without it the demo is
// open — anyone may register as any name — and says so in its log and on
// the page; even then a connection changes only the bindings it made.
//
// Browsers may connect from pages of this server only, or of the origins
// of -allow-origin (repeatable; "*" for any).
//
// With -redis URL and -node NAME it is one node of a cluster (cluster.go):
// bindings live in Redis with the node that holds their flow and its Path,
// a flow-token URI of the node's -sip-addr, where the other nodes send it
// SIP over TCP for its phones; nodes whose heartbeat lapses are out of the
// routing within seconds. Without -redis bindings are kept in memory.
//
// Its first log line is "listening on URL" with the address actually bound
// (useful with port 0). SIGINT or SIGTERM stops it: every phone gets a close
// frame with 1001 "Going away" (JsSIP and SIP.js reconnect and register
// again when it is back), and it exits 0 once they are gone or 10 s have
// passed. Invalid flags exit 2.
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
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"

	"github.com/sipws/sipws"
	"github.com/sipws/sipws/examples/internal/webpage"
	"github.com/sipws/sipws/sipwsprom"
)

const (
	shutdownBound    = 10 * time.Second
	handshakeTimeout = 10 * time.Second
	maxHeaderBytes   = 16 << 10
	sweepInterval    = time.Second
	flowNode         = "webphone"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, stop, os.Args[1:], os.Stderr))
}

// options are the parsed command line.
type options struct {
	addr       string
	domain     string
	tlsCert    string
	tlsKey     string
	selfSigned bool
	http2      bool
	compress   bool // -compression: Config.Compression
	admin      string
	web        string
	webSet     bool
	flowKey    []byte
	logLevel   slog.Level
	users      map[string]credential // nil: open mode
	algs       []string
	origins    []string
	node       string // -node; flowNode when empty
	redisURL   string // -redis; "" is a single node
	sipAddr    string // -sip-addr
}

// usageError is a bad command line: exit status 2.
type usageError struct {
	err      error
	reported bool
}

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

const defaultWeb = "examples/webphone/web"

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("webphone", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: webphone [flags]\n\n"+
			"The sipws demo: a SIP registrar and proxy for browser phones over\n"+
			"WebSocket, and the page of a web phone at /.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.addr, "addr", "127.0.0.1:8080", "TCP `address` to listen on (port 0 picks a free port)")
	fs.StringVar(&o.domain, "domain", "sipws.test", "SIP `domain` of the users (sip:USER@DOMAIN)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "PEM certificate `file`: serve https and wss (with -tls-key)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "PEM private key `file` of -tls-cert")
	fs.BoolVar(&o.selfSigned, "self-signed", false, "serve https and wss with a certificate for 127.0.0.1/localhost made at start")
	fs.BoolVar(&o.http2, "http2", false, "offer HTTP/2 by ALPN too (with -tls-cert or -self-signed), and WebSocket over it (RFC 8441): the process must start with GODEBUG=http2xconnect=1 in its environment, which Go's HTTP/2 server reads when it starts")
	fs.StringVar(&o.admin, "admin", "", "`address` of a private listener for the operations RPC (/RPC: ws.dump, ws.close, …) and Prometheus metrics (/metrics), e.g. 127.0.0.1:8081, where sipwsctl looks by default; no authentication: keep it on loopback (empty: none)")
	fs.BoolVar(&o.compress, "compression", false, "negotiate permessage-deflate (RFC 7692) with browsers, which all offer it; off where attacker-chosen text shares messages with secrets (CRIME/BREACH, see SECURITY.md)")
	fs.StringVar(&o.web, "web", defaultWeb, "`directory` of the page (index.html, app.js, style.css, node_modules)")
	flowKey := fs.String("flow-key", "", "`hex` key (16+ bytes) of the flow tokens in Record-Route; keep it across restarts so that old dialogs get 430 (empty: random)")
	logLevel := fs.String("log-level", "info", "log `level`: debug (every SIP message), info or warn")
	usersFile := fs.String("users", "", "users `file`: user:password or htdigest user:realm:HA1[:SHA-256-HA1] lines; every user must then authenticate (digest); empty: open demo, anyone may register as any name")
	algs := fs.String("digest-algorithms", "SHA-256,MD5", "digest `algorithms` offered, one challenge each, most preferred first (RFC 8760); JsSIP and SIP.js read only the last challenge of a response and answer only MD5: keep MD5 last")
	fs.StringVar(&o.node, "node", "", "`name` of this node in a cluster (1–32 of A–Z a–z 0–9 . - _), in its flow tokens and in Redis; required with -redis")
	fs.StringVar(&o.redisURL, "redis", "", "Redis `URL` (redis://HOST:PORT/DB) of the location service shared by the nodes of a cluster; empty: one node, bindings in memory")
	fs.StringVar(&o.sipAddr, "sip-addr", "127.0.0.1:0", "with -redis: TCP `address` where the other nodes send SIP for the phones of this node (port 0 picks one; it is told to them through Redis); keep it on loopback or a private network")
	fs.Func("allow-origin", "`pattern` of browser Origins allowed besides the page's own (repeatable): host[:port] or scheme://host[:port] with path.Match wildcards, \"*\" for any", func(v string) error {
		o.origins = append(o.origins, v)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, usageError{err: err, reported: true}
	}
	fs.Visit(func(f *flag.Flag) { o.webSet = o.webSet || f.Name == "web" })
	if fs.NArg() > 0 {
		return o, usageError{err: fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return o, usageError{err: errors.New("-tls-cert and -tls-key go together")}
	}
	if o.selfSigned && o.tlsCert != "" {
		return o, usageError{err: errors.New("-self-signed and -tls-cert exclude each other")}
	}
	if o.http2 && o.tlsCert == "" && !o.selfSigned {
		return o, usageError{err: errors.New("-http2 needs -tls-cert or -self-signed: browsers speak HTTP/2 only over TLS")}
	}
	if o.http2 && !strings.Contains(os.Getenv("GODEBUG"), "http2xconnect=1") {
		return o, usageError{err: errors.New("-http2 needs GODEBUG=http2xconnect=1 in the environment: without it Go's HTTP/2 server does not offer Extended CONNECT, and browsers keep WebSocket on HTTP/1.1")}
	}
	if o.domain == "" || strings.ContainsAny(o.domain, " \t;:@<>/") {
		return o, usageError{err: fmt.Errorf("-domain %q: want a host name", o.domain)}
	}
	if *flowKey != "" {
		k, err := hex.DecodeString(*flowKey)
		if err != nil || len(k) < 16 {
			return o, usageError{err: errors.New("-flow-key: want at least 16 bytes in hex")}
		}
		o.flowKey = k
	}
	if o.redisURL != "" {
		if o.node == "" {
			return o, usageError{err: errors.New("-redis needs -node NAME")}
		}
		if _, err := redis.ParseURL(o.redisURL); err != nil {
			return o, usageError{err: fmt.Errorf("-redis: %w", err)}
		}
		if host, _, err := net.SplitHostPort(o.sipAddr); err != nil || host == "" {
			return o, usageError{err: fmt.Errorf("-sip-addr %q: want HOST:PORT with a host the other nodes can reach", o.sipAddr)}
		} else if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
			return o, usageError{err: fmt.Errorf("-sip-addr %q: name one address, not all: the other nodes are told it", o.sipAddr)}
		}
	}
	if o.node != "" {
		if _, err := sipws.NewFlowTokens(o.node, make([]byte, 16)); err != nil {
			return o, usageError{err: fmt.Errorf("-node: %w", err)}
		}
	}
	var err error
	if o.algs, err = parseAlgorithms(*algs); err != nil {
		return o, usageError{err: fmt.Errorf("-digest-algorithms: %w", err)}
	}
	if *usersFile != "" {
		if o.users, err = loadUsers(*usersFile, o.domain); err != nil {
			return o, usageError{err: fmt.Errorf("-users: %w", err)}
		}
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
	return o, nil
}

// app is the wired-up program: the proxy, the sipws Server, its metrics
// and the site.
type app struct {
	proxy   *proxy
	ws      *sipws.Server
	metrics *sipwsprom.Metrics
	site    *site
}

// appConfig is what newApp needs of the options.
type appConfig struct {
	domain  string
	webDir  string
	flowKey []byte                // nil: random
	users   map[string]credential // nil: open mode
	algs    []string              // nil: SHA-256, MD5
	origins []string              // -allow-origin; nil: same origin only
	deflate bool                  // -compression
	node    string                // -node; "" is flowNode
	redis   string                // -redis URL; "": one node
	sipAddr string                // -sip-addr, with redis
}

// newApp builds the proxy and the sipws Server around it.
func newApp(cfg appConfig, log *slog.Logger) (*app, error) {
	domain, webDir, flowKey := cfg.domain, cfg.webDir, cfg.flowKey
	if flowKey == nil {
		flowKey = make([]byte, 32)
		_, _ = rand.Read(flowKey)
	}
	node := cfg.node
	if node == "" {
		node = flowNode
	}
	ft, err := sipws.NewFlowTokens(node, flowKey)
	if err != nil {
		return nil, err
	}
	p := newProxy(domain, log.With("component", "sip"))
	if cfg.users != nil {
		algs := cfg.algs
		if algs == nil {
			algs = []string{algSHA256, algMD5}
		}
		p.auth = newDigestAuth(domain, cfg.users, algs, func() time.Time { return p.now() })
	}
	metrics := sipwsprom.New()
	// Same origin only, unless -allow-origin: AllowedOrigins then lets the
	// page's own origin through besides the patterns.
	var checkOrigin func(*http.Request) bool
	if len(cfg.origins) == 0 {
		checkOrigin = sameOrigin
	}
	ws, err := sipws.New(sipws.Config{
		Observer:       metrics,
		Subprotocols:   sipws.SIP,
		FlowTokens:     ft,
		CheckOrigin:    checkOrigin,
		AllowedOrigins: cfg.origins,
		Compression:    cfg.deflate,
		Logger:         log.With("component", "sipws"),
		OnMessage:      p.onMessage,
		OnClosed:       p.onClosed,
		OnOpen: func(c *sipws.Conn) {
			log.Info("connection open", "conn", c.ID(), "remote", c.RemoteAddr(), "secure", c.Secure(), "http2", c.HTTP2(), "origin", c.Header().Get("Origin"))
		},
	})
	if err != nil {
		return nil, err
	}
	p.ws = ws
	if cfg.redis != "" {
		opts, err := redis.ParseURL(cfg.redis)
		if err != nil {
			return nil, fmt.Errorf("-redis: %w", err)
		}
		opts.ContextTimeoutEnabled = true // each store operation is bounded by redisTimeout
		// A Redis that is down fails a request at once (503) rather than
		// after go-redis's default retries (unless the URL sets them).
		if opts.MaxRetries == 0 {
			opts.MaxRetries = 1
		}
		if opts.DialerRetries == 0 {
			opts.DialerRetries = 1
		}
		if opts.DialTimeout == 0 {
			opts.DialTimeout = redisTimeout
		}
		rdb := redis.NewClient(opts)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		cl, err := newCluster(ctx, node, cfg.sipAddr, rdb, log.With("component", "cluster", "node", node))
		cancel()
		if err != nil {
			_ = rdb.Close()
			return nil, err
		}
		p.cl = cl
		p.reg = newRedisStore(rdb, cl, log.With("component", "location"))
		cl.start(p)
		log.Info("cluster node "+node+": SIP from the other nodes on "+cl.addr, "node", node, "run", cl.run, "sip_addr", cl.addr, "redis", opts.Addr)
	}
	metrics.Watch(ws)
	s := &site{page: &webpage.Page{Dir: webDir, Log: log.With("component", "web")}, ws: ws, proxy: p, log: log.With("component", "web")}
	return &app{proxy: p, ws: ws, metrics: metrics, site: s}, nil
}

func run(ctx context.Context, stopSignals func(), args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		if ue, ok := err.(usageError); !ok || !ue.reported {
			fmt.Fprintf(stderr, "webphone: %v\n", err)
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel}))

	if !o.webSet && !webpage.DirOK(o.web) && webpage.DirOK("web") {
		o.web = "web" // started from examples/webphone
	}
	if !webpage.DirOK(o.web) {
		log.Warn("no index.html in the web directory: the page will not be served (set -web)", "web", o.web)
	}
	a, err := newApp(appConfig{domain: o.domain, webDir: o.web, flowKey: o.flowKey, users: o.users, algs: o.algs, origins: o.origins, deflate: o.compress,
		node: o.node, redis: o.redisURL, sipAddr: o.sipAddr}, log)
	if err != nil {
		fmt.Fprintf(stderr, "webphone: %v\n", err)
		return 2
	}
	if o.users == nil {
		log.Warn("open demo: no -users file, anyone may register as any name (a connection still changes only the bindings it made)")
	} else {
		log.Info("digest authentication on", "users", len(o.users), "algorithms", strings.Join(o.algs, ","))
	}
	if _, err := a.site.page.BuildJsSIP(); err != nil {
		log.Warn("JsSIP not bundled: the page cannot register until it is installed", "hint", webpage.NPMHint, "err", err)
	}

	ln, scheme, err := webpage.Listen(o.addr, webpage.TLS{CertFile: o.tlsCert, KeyFile: o.tlsKey, SelfSigned: o.selfSigned, HTTP2: o.http2}, log)
	if err != nil {
		fmt.Fprintf(stderr, "webphone: %v\n", err)
		return 1
	}
	errorLog := slog.NewLogLogger(log.Handler(), slog.LevelWarn)
	hsrv := &http.Server{
		Handler:           a.site.handler(),
		ReadHeaderTimeout: handshakeTimeout,
		ReadTimeout:       handshakeTimeout,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          errorLog,
	}
	var admin *http.Server
	if o.admin != "" {
		aln, err := net.Listen("tcp", o.admin)
		if err != nil {
			_ = ln.Close()
			fmt.Fprintf(stderr, "webphone: -admin: %v\n", err)
			return 1
		}
		reg := prometheus.NewRegistry()
		reg.MustRegister(a.metrics)
		mux := http.NewServeMux()
		// Besides loopback names, the RPC answers to the host -admin names.
		rpcOpts := &sipws.RPCOptions{}
		if host, _, err := net.SplitHostPort(o.admin); err == nil && host != "" {
			rpcOpts.AllowedHosts = []string{host}
		}
		mux.Handle("/RPC", sipws.NewRPCHandler(a.ws, rpcOpts))
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		a.site.adminRoutes(mux, rpcOpts.AllowedHosts...)
		admin = &http.Server{Handler: mux, ReadHeaderTimeout: handshakeTimeout, ReadTimeout: handshakeTimeout, ErrorLog: errorLog}
		log.Info("admin: operations RPC on http://"+aln.Addr().String()+"/RPC, metrics on /metrics, /api/connections, /api/bindings", "addr", aln.Addr().String())
		go func() { _ = admin.Serve(aln) }()
	}

	url := scheme + "://" + ln.Addr().String() + "/"
	log.Info("listening on "+url, "addr", ln.Addr().String(), "domain", o.domain, "web", o.web)
	go a.proxy.run(sweepInterval)
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
	a.proxy.close()
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
