// Command optionsd is the sipws server of the benchmark suite (bench/run.sh):
// it accepts WebSocket handshakes with the sub-protocol sip on every path and
// answers each SIP OPTIONS with a 200 OK (Via, From, To with a tag, Call-ID,
// CSeq, Content-Length: 0), from Config.OnMessage, with Conn.Send. Anything
// else it receives is dropped. bench/bareopts does the same job on bare
// gobwas/ws; the answer is built by the same code (bench/internal/sipopts).
//
//	go run ./bench/optionsd -addr 127.0.0.1:18081
//	go run ./bench/optionsd -addr 127.0.0.1:18081 -keepalive ping -keepalive-timeout 180s -pprof 127.0.0.1:6061
//
// Its first log line is "listening on ADDR" (the address bound, useful with
// port 0). -pprof serves net/http/pprof on a separate loopback admin address.
// SIGINT or SIGTERM shuts it down (1001 to every client, at most 5 s).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sipws/sipws"
	"github.com/sipws/sipws/bench/internal/sipopts"
)

const shutdownBound = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stderr))
}

type options struct {
	addr      string
	pprofAddr string
	memRate   int
	logLevel  slog.Level
	cfg       sipws.Config
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("optionsd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: optionsd [flags]\n\n"+
			"A sipws server that answers every SIP OPTIONS with 200 OK (benchmarks).\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.addr, "addr", "127.0.0.1:18081", "TCP `address` to listen on (port 0 picks a free port)")
	fs.TextVar(&o.cfg.Keepalive, "keepalive", sipws.KeepalivePing, "keepalive `mechanism`: none, ping or pong")
	fs.DurationVar(&o.cfg.KeepaliveTimeout, "keepalive-timeout", 0, "idle time after which a keepalive is sent (0: 3m0s)")
	fs.DurationVar(&o.cfg.KeepaliveInterval, "keepalive-interval", 0, "how often due keepalives are looked for (0: 1s)")
	fs.IntVar(&o.cfg.KeepaliveWorkers, "keepalive-workers", 0, "number of keepalive goroutines (0: 1)")
	fs.IntVar(&o.cfg.ReadBufferSize, "read-buffer", 0, "read buffer `bytes` per connection (0: 512)")
	fs.StringVar(&o.pprofAddr, "pprof", "", "loopback `address` to serve net/http/pprof on (empty: none)")
	fs.IntVar(&o.memRate, "memprofilerate", 0, "runtime.MemProfileRate: sample one allocation per this many `bytes` for heap profiles (0: Go's default, 512 KiB)")
	logLevel := fs.String("log-level", "warn", "`level` of sipws's logs: debug, info or warn (info logs every connection)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := o.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return o, fmt.Errorf("-log-level: %w", err)
	}
	if o.pprofAddr != "" {
		if err := checkLoopback(o.pprofAddr); err != nil {
			return o, fmt.Errorf("-pprof: %w", err)
		}
	}
	o.cfg.Subprotocols = sipws.SIP
	return o, nil
}

// checkLoopback refuses an admin address that is not on loopback.
func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(host); err != nil || !ip.IsLoopback() {
		if host != "localhost" {
			return fmt.Errorf("%q is not a loopback address", addr)
		}
	}
	return nil
}

// onMessage answers an OPTIONS with 200 OK. The reply is built on the stack
// (Send copies it into its frame).
func onMessage(c *sipws.Conn, m sipws.Message) {
	var buf [1024]byte
	if reply, ok := sipopts.Reply(buf[:0], m.Data); ok {
		_ = c.Send(reply) // fails only when the connection is closing
	}
}

func run(ctx context.Context, args []string, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "optionsd: %v\n", err)
		return 2
	}
	if o.memRate > 0 {
		runtime.MemProfileRate = o.memRate
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	o.cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.logLevel})).With("component", "sipws")
	o.cfg.OnMessage = onMessage
	wsrv, err := sipws.New(o.cfg)
	if err != nil {
		fmt.Fprintf(stderr, "optionsd: %v\n", err)
		return 2
	}
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		fmt.Fprintf(stderr, "optionsd: %v\n", err)
		return 1
	}
	hsrv := &http.Server{
		Handler:           wsrv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		IdleTimeout:       10 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	addr := ln.Addr().String()
	log.Info("listening on "+addr, "addr", addr, "keepalive", o.cfg.Keepalive, "keepalive_timeout", o.cfg.KeepaliveTimeout)

	var admin *http.Server
	if o.pprofAddr != "" {
		aln, err := net.Listen("tcp", o.pprofAddr)
		if err != nil {
			fmt.Fprintf(stderr, "optionsd: -pprof: %v\n", err)
			return 1
		}
		admin = &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
		log.Info("pprof on http://"+aln.Addr().String()+"/debug/pprof/", "addr", aln.Addr().String())
		go func() { _ = admin.Serve(aln) }()
	}

	served := make(chan error, 1)
	go func() { served <- hsrv.Serve(ln) }()
	status := 0
	select {
	case err := <-served:
		log.Error("serve", "err", err)
		status = 1
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownBound)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() { _ = hsrv.Shutdown(sctx) })
	wg.Go(func() { _ = wsrv.Shutdown(sctx) })
	if admin != nil {
		wg.Go(func() { _ = admin.Shutdown(sctx) })
	}
	wg.Wait()
	log.Info("shut down")
	return status
}

// pprofMux serves net/http/pprof's handlers.
func pprofMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
