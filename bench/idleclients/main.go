// Command idleclients opens many idle WebSocket connections (sub-protocol
// sip) to a server and keeps them open, answering every Ping with a Pong,
// until it is interrupted or -hold passes. It spreads its connections over
// several loopback source addresses so that more than one address's worth of
// ephemeral ports can be used. It is a load generator for bench/keepalive.sh;
// it only ever connects to loopback addresses.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

func main() {
	var (
		url     = flag.String("url", "ws://127.0.0.1:8080/", "server URL (loopback only)")
		n       = flag.Int("n", 1000, "connections to open")
		sources = flag.Int("sources", 4, "source addresses to spread over: 127.0.0.2 … 127.0.0.(1+sources)")
		rate    = flag.Int("rate", 2000, "connections opened per second at most")
		hold    = flag.Duration("hold", time.Hour, "how long to keep the connections open")
	)
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, *url, *n, *sources, *rate, *hold); err != nil {
		log.Error("idleclients", "err", err)
		os.Exit(1)
	}
}

func run(log *slog.Logger, url string, n, sources, rate int, hold time.Duration) error {
	if sources < 1 || sources > 250 {
		return fmt.Errorf("-sources %d: want 1..250", sources)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, hold)
	defer cancel()

	var (
		open, pings atomic.Int64
		wg          sync.WaitGroup
		mu          sync.Mutex
		conns       []net.Conn
	)
	tick := time.NewTicker(time.Second / time.Duration(max(rate, 1)))
	defer tick.Stop()
	for i := range n {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		src := netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i%sources)})
		d := ws.Dialer{
			Protocols: []string{"sip"},
			Timeout:   10 * time.Second,
			NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
				ap, err := netip.ParseAddrPort(addr)
				if err != nil || !ap.Addr().IsLoopback() {
					return nil, fmt.Errorf("refusing non-loopback address %q", addr)
				}
				nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: src.AsSlice()}}
				return nd.DialContext(ctx, network, addr)
			},
		}
		conn, br, _, err := d.Dial(ctx, url)
		if err != nil {
			return fmt.Errorf("connection %d: %w", i, err)
		}
		if br != nil {
			ws.PutReader(br)
		}
		mu.Lock()
		conns = append(conns, conn)
		mu.Unlock()
		open.Add(1)
		wg.Go(func() {
			defer open.Add(-1)
			for {
				h, err := ws.ReadHeader(conn)
				if err != nil {
					return
				}
				p := make([]byte, h.Length)
				if _, err := io.ReadFull(conn, p); err != nil {
					return
				}
				switch h.OpCode {
				case ws.OpPing:
					pings.Add(1)
					if wsutil.WriteClientMessage(conn, ws.OpPong, p) != nil {
						return
					}
				case ws.OpClose:
					_ = wsutil.WriteClientMessage(conn, ws.OpClose, p)
					return
				}
			}
		})
	}
	log.Info("all connected", "connections", open.Load())
	fmt.Println("READY", open.Load())
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			mu.Lock()
			for _, c := range conns {
				_ = c.Close()
			}
			mu.Unlock()
			wg.Wait()
			return nil
		case <-t.C:
			log.Info("holding", "open", open.Load(), "pings answered", pings.Load())
		}
	}
}
