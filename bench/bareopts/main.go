// Command bareopts is the floor of the benchmark suite (bench/run.sh): the
// same job as bench/optionsd — WebSocket on every path, sub-protocol sip,
// every SIP OPTIONS answered with a 200 OK built by bench/internal/sipopts —
// done with bare github.com/gobwas/ws behind net/http and nothing else: no
// registry, no keepalive, no send queue, no deadlines, no hooks. What sipws
// costs more than this is its overhead.
//
//	go run ./bench/bareopts -addr 127.0.0.1:18082
//
// Each connection is upgraded with ws.UpgradeHTTP and then read by one
// goroutine through a 512-byte bufio.Reader under ws.ReadHeaderBuffer (the
// net/http handler goroutine ends; its 4 KiB reader is dropped once the bytes
// it holds are copied). The reply is written by that goroutine, header and
// payload in one write. Pings are answered with Pongs, a close frame with its
// echo. Text messages are checked to be UTF-8 and messages are limited to
// 64 KiB, as sipws does by default.
//
// Its first log line is "listening on ADDR". SIGINT or SIGTERM stops it.
package main

import (
	"bufio"
	"context"
	"encoding/binary"
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
	"unicode/utf8"

	"github.com/gobwas/ws"
	"github.com/sipws/sipws/bench/internal/sipopts"
)

const (
	maxMessage  = 64 << 10 // as sipws.Config.MaxMessageSize's default
	readBufSize = 512      // as sipws.Config.ReadBufferSize's default
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18082", "TCP `address` to listen on (port 0 picks a free port)")
	pprofAddr := flag.String("pprof", "", "loopback `address` to serve net/http/pprof on (empty: none)")
	memRate := flag.Int("memprofilerate", 0, "runtime.MemProfileRate: sample one allocation per this many `bytes` for heap profiles (0: Go's default, 512 KiB)")
	flag.Parse()
	if *memRate > 0 {
		runtime.MemProfileRate = *memRate
	}
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bareopts: unexpected arguments: %s\n", strings.Join(flag.Args(), " "))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, log, *addr, *pprofAddr); err != nil {
		log.Error("bareopts", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, addr, pprofAddr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &server{log: log}
	hsrv := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       10 * time.Second,
		IdleTimeout:       10 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("listening on "+ln.Addr().String(), "addr", ln.Addr().String())
	if pprofAddr != "" {
		if err := checkLoopback(pprofAddr); err != nil {
			return fmt.Errorf("-pprof: %w", err)
		}
		aln, err := net.Listen("tcp", pprofAddr)
		if err != nil {
			return fmt.Errorf("-pprof: %w", err)
		}
		defer aln.Close()
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		go func() { _ = http.Serve(aln, mux) }()
		log.Info("pprof on http://"+aln.Addr().String()+"/debug/pprof/", "addr", aln.Addr().String())
	}
	served := make(chan error, 1)
	go func() { served <- hsrv.Serve(ln) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hsrv.Shutdown(sctx)
	srv.closeAll()
	log.Info("shut down")
	return nil
}

func checkLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip, err := netip.ParseAddr(host); (err != nil || !ip.IsLoopback()) && host != "localhost" {
		return fmt.Errorf("%q is not a loopback address", addr)
	}
	return nil
}

// server upgrades every request and keeps the set of connections, only to
// close them at shutdown.
type server struct {
	log   *slog.Logger
	mu    sync.Mutex
	conns map[*conn]struct{}
}

var upgrader = ws.HTTPUpgrader{
	Protocol: func(p string) bool { return p == "sip" },
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	nc, rw, hs, err := upgrader.Upgrade(r, w)
	if err != nil {
		// gobwas/ws has written the error response.
		if nc != nil {
			_ = nc.Close()
		}
		return
	}
	if hs.Protocol != "sip" {
		_ = nc.Close() // no sip offered: a 101 without it went out; end it
		return
	}
	// Bytes the HTTP server read past the request (a frame pipelined behind
	// the handshake) must be read before the socket.
	var rd io.Reader = nc
	if n := rw.Reader.Buffered(); n > 0 {
		pre, _ := rw.Reader.Peek(n)
		rd = io.MultiReader(strings.NewReader(string(pre)), nc)
	}
	c := &conn{nc: nc, br: bufio.NewReaderSize(rd, readBufSize)}
	s.mu.Lock()
	if s.conns == nil {
		s.conns = make(map[*conn]struct{})
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	go func() {
		c.serve()
		_ = nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
}

func (s *server) closeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		_ = c.nc.Close()
	}
}

// conn is one upgraded connection.
type conn struct {
	nc   net.Conn
	br   *bufio.Reader
	hbuf [ws.MaxHeaderSize - 2]byte
	ctl  [ws.MaxControlFramePayloadSize]byte
}

// outBufs holds reply buffers: a frame header and a SIP response.
var outBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// serve reads frames until the connection ends.
func (c *conn) serve() {
	var msg []byte // a fragmented message being assembled
	fragmented := false
	for {
		h, err := ws.ReadHeaderBuffer(c.br, c.hbuf[:])
		if err != nil {
			return
		}
		if h.Rsv != 0 || !h.Masked {
			c.closeWith(ws.StatusProtocolError)
			return
		}
		if h.OpCode.IsControl() {
			if !h.Fin || h.Length > ws.MaxControlFramePayloadSize {
				c.closeWith(ws.StatusProtocolError)
				return
			}
			p := c.ctl[:h.Length]
			if _, err := io.ReadFull(c.br, p); err != nil {
				return
			}
			ws.Cipher(p, h.Mask, 0)
			switch h.OpCode {
			case ws.OpPing:
				if c.write(ws.OpPong, p) != nil {
					return
				}
			case ws.OpClose:
				code := ws.StatusNormalClosure
				if len(p) >= 2 {
					code = ws.StatusCode(binary.BigEndian.Uint16(p))
				}
				c.closeWith(code)
				return
			}
			continue
		}
		switch {
		case h.OpCode == ws.OpContinuation && !fragmented,
			h.OpCode != ws.OpContinuation && fragmented,
			h.OpCode != ws.OpContinuation && !h.OpCode.IsData():
			c.closeWith(ws.StatusProtocolError)
			return
		case int64(len(msg))+h.Length > maxMessage:
			c.closeWith(ws.StatusMessageTooBig)
			return
		}
		start := len(msg)
		msg = append(msg, make([]byte, h.Length)...)
		if _, err := io.ReadFull(c.br, msg[start:]); err != nil {
			return
		}
		ws.Cipher(msg[start:], h.Mask, 0)
		if !h.Fin {
			fragmented = true
			continue
		}
		fragmented = false
		// Text frames of a text message must be UTF-8 (the opcode of the
		// first frame decides; the loadgen sends text).
		if !utf8.Valid(msg) {
			c.closeWith(ws.StatusInvalidFramePayloadData)
			return
		}
		if c.answer(msg) != nil {
			return
		}
		msg = nil
	}
}

// answer sends the 200 OK for an OPTIONS; anything else is dropped.
func (c *conn) answer(req []byte) error {
	bp := outBufs.Get().(*[]byte)
	defer outBufs.Put(bp)
	const hdr = 4 // room for the largest header a reply needs (126 + 2 bytes)
	b, ok := sipopts.Reply((*bp)[:hdr], req)
	if !ok {
		return nil
	}
	n := len(b) - hdr
	var off int
	if n < 126 {
		off = 2
		b[2], b[3] = 0x80|byte(ws.OpText), byte(n)
	} else {
		off = 0
		b[0], b[1] = 0x80|byte(ws.OpText), 126
		binary.BigEndian.PutUint16(b[2:], uint16(n))
	}
	*bp = b[:0]
	_, err := c.nc.Write(b[off:])
	return err
}

// write sends one unfragmented frame, header and payload in one write.
func (c *conn) write(op ws.OpCode, p []byte) error {
	bp := outBufs.Get().(*[]byte)
	defer outBufs.Put(bp)
	b := append((*bp)[:0], 0x80|byte(op))
	switch {
	case len(p) < 126:
		b = append(b, byte(len(p)))
	case len(p) <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 126), uint16(len(p)))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 127), uint64(len(p)))
	}
	b = append(b, p...)
	*bp = b[:0]
	_, err := c.nc.Write(b)
	return err
}

// closeWith sends a close frame with code and ends the connection: our FIN,
// then a short wait for the peer's, so that it reads the close frame before
// the socket is gone.
func (c *conn) closeWith(code ws.StatusCode) {
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], uint16(code))
	if code == ws.StatusNoStatusRcvd {
		binary.BigEndian.PutUint16(p[:], uint16(ws.StatusNormalClosure))
	}
	if c.write(ws.OpClose, p[:]) != nil {
		return
	}
	if tc, ok := c.nc.(*net.TCPConn); ok && tc.CloseWrite() == nil {
		_ = c.nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		_, err := io.CopyN(io.Discard, c.br, 1<<16)
		if err != nil && !errors.Is(err, io.EOF) {
			return
		}
	}
}
