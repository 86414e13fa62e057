// Command sipgobridge measures what sipwssipgo costs: memory per idle
// connection and CPU per request of a sipgo server that answers OPTIONS,
// reached four ways —
//
//	sipws    plain sipws answering itself (bench/internal/sipopts): the floor
//	sipgo    sipgo's own WebSocket listener (Server.ListenAndServe "ws")
//	bridge   sipws + sipwssipgo + the same sipgo Server
//	patched  sipws + a direct hand-off into a sipgo patched with an exported
//	         TransportLayer.HandleMessage (docs/sipgo.md); built only with
//	         -tags sipgopatched against that copy (see bench/sipgobridge/run.sh)
//
// Each mode runs in a server process of its own (this binary, -serve MODE);
// the clients run in the measuring process. Memory: Go heap in use + stacks
// in use of the server after a GC (its /mem), and its PSS
// (/proc/PID/smaps_rollup), with N idle connections that each sent one
// OPTIONS and got its 200, less the same with none, ÷ N. CPU: the server's
// utime+stime (/proc/PID/stat) while C connections each keep one OPTIONS
// outstanding for D, ÷ the 200s received.
//
//	go run ./bench/sipgobridge -n 2000 -c 50 -d 5s
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/sipws/sipws"
	"github.com/sipws/sipws/bench/internal/sipopts"
	"github.com/sipws/sipws/sipwssipgo"
)

func main() {
	serve := flag.String("serve", "", "run the server of `mode` (sipws, sipgo, bridge, patched) and print its addresses")
	n := flag.Int("n", 2000, "idle connections")
	c := flag.Int("c", 50, "connections of the CPU run, each with one OPTIONS outstanding")
	d := flag.Duration("d", 5*time.Second, "length of the CPU run")
	modes := flag.String("modes", "sipws,sipgo,bridge", "modes to measure, comma-separated")
	flag.Parse()
	if *serve != "" {
		if err := runServer(*serve); err != nil {
			fmt.Fprintln(os.Stderr, "sipgobridge:", err)
			os.Exit(1)
		}
		return
	}
	fmt.Printf("| mode | heap+stack per idle conn | PSS per idle conn | goroutines per idle conn | server CPU per request | requests/s |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, m := range strings.Split(*modes, ",") {
		r, err := measure(m, *n, *c, *d)
		if err != nil {
			fmt.Fprintf(os.Stderr, "sipgobridge: %s: %v\n", m, err)
			os.Exit(1)
		}
		fmt.Printf("| %s | %.1f KB | %.1f KB | %.2f | %.1f µs | %.0f |\n", m, r.heapStack/1024, r.pss/1024, r.goroutines, r.cpuPerReq*1e6, r.rps)
	}
}

// memJSON is a server's /mem.
type memJSON struct {
	HeapInuse  uint64 `json:"heap_inuse"`
	StackInuse uint64 `json:"stack_inuse"`
	Goroutines int    `json:"goroutines"`
}

func memHandler(w http.ResponseWriter, r *http.Request) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	_ = json.NewEncoder(w).Encode(memJSON{ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine()})
}

// newUA returns a sipgo UserAgent and Server answering OPTIONS with 200.
func newSipgo() (*sipgo.UserAgent, *sipgo.Server, error) {
	ua, err := sipgo.NewUA(sipwssipgo.UserAgentOptions()...)
	if err != nil {
		return nil, nil, err
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		return nil, nil, err
	}
	srv.OnOptions(func(req *sip.Request, tx sip.ServerTransaction) {
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	return ua, srv, nil
}

// runServer serves mode on a free loopback port and /mem on another; it
// prints "ADDR ADMIN" and runs until SIGTERM.
func runServer(mode string) error {
	slog.SetDefault(slog.New(slog.DiscardHandler)) // sipgo logs through it
	sip.SetDefaultLogger(slog.New(slog.DiscardHandler))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(admin, http.HandlerFunc(memHandler)) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	cfg := sipws.Config{Keepalive: sipws.KeepaliveNone, MaxMessageSize: sipwssipgo.MaxMessageSize()}
	switch mode {
	case "sipws":
		cfg.OnMessage = func(c *sipws.Conn, m sipws.Message) {
			var buf [1024]byte
			if reply, ok := sipopts.Reply(buf[:0], m.Data); ok {
				_ = c.Send(reply)
			}
		}
	case "sipgo":
		_, srv, err := newSipgo()
		if err != nil {
			return err
		}
		fmt.Println(ln.Addr(), admin.Addr())
		go func() { <-ctx.Done(); _ = ln.Close() }()
		_ = srv.ServeWS(ln)
		return nil
	case "bridge":
		ua, _, err := newSipgo()
		if err != nil {
			return err
		}
		b, err := sipwssipgo.New(ua, sipwssipgo.Config{})
		if err != nil {
			return err
		}
		cfg.OnMessage = b.OnMessage
	default:
		h, err := patchedHandler(mode)
		if err != nil {
			return err
		}
		cfg.OnMessage = h
	}
	s, err := sipws.New(cfg)
	if err != nil {
		return err
	}
	hs := &http.Server{Handler: s}
	fmt.Println(ln.Addr(), admin.Addr())
	go func() { _ = hs.Serve(ln) }()
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hs.Shutdown(sctx)
	return s.Shutdown(sctx)
}

type result struct {
	heapStack, pss, goroutines, cpuPerReq, rps float64
}

// server is a running server process.
type server struct {
	cmd         *exec.Cmd
	addr, admin string
}

func startServer(mode string) (*server, error) {
	cmd := exec.Command(os.Args[0], "-serve", mode)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 2 {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("server did not start: %q %v", line, err)
	}
	return &server{cmd: cmd, addr: f[0], admin: f[1]}, nil
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

func (s *server) mem() (memJSON, error) {
	var m memJSON
	res, err := http.Get("http://" + s.admin + "/mem")
	if err != nil {
		return m, err
	}
	defer res.Body.Close()
	return m, json.NewDecoder(res.Body).Decode(&m)
}

// pss is the server's proportional set size, bytes.
func (s *server) pss() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Pss:" {
			kb, err := strconv.ParseFloat(f[1], 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no Pss in smaps_rollup")
}

// cpu is the server's utime+stime, seconds.
func (s *server) cpu() (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil // USER_HZ
}

// client is one WebSocket SIP client.
type client struct {
	conn net.Conn
	r    *wsutil.Reader
	id   int
	seq  int
}

var branchSeq atomic.Uint64

func dial(addr string, id int) (*client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := ws.Dialer{Protocols: []string{"sip"}}
	c, _, _, err := d.Dial(ctx, "ws://"+addr+"/")
	if err != nil {
		return nil, err
	}
	return &client{conn: c, id: id}, nil
}

// options sends one OPTIONS and waits for its 200.
func (c *client) options() error {
	c.seq++
	b := branchSeq.Add(1)
	msg := fmt.Sprintf("OPTIONS sip:bench.test SIP/2.0\r\n"+
		"Via: SIP/2.0/WS c%d.invalid;branch=z9hG4bK%d\r\n"+
		"Max-Forwards: 70\r\n"+
		"To: <sip:bench.test>\r\n"+
		"From: <sip:c%d@bench.test>;tag=t%d\r\n"+
		"Call-ID: c%d-%d\r\n"+
		"CSeq: %d OPTIONS\r\n"+
		"Content-Length: 0\r\n\r\n", c.id, b, c.id, c.id, c.id, c.seq, c.seq)
	if err := wsutil.WriteClientText(c.conn, []byte(msg)); err != nil {
		return err
	}
	_ = c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	data, err := wsutil.ReadServerText(c.conn)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(data), "SIP/2.0 200 ") {
		return fmt.Errorf("answer %q", strings.SplitN(string(data), "\r\n", 2)[0])
	}
	return nil
}

func measure(mode string, n, c int, d time.Duration) (result, error) {
	var r result
	s, err := startServer(mode)
	if err != nil {
		return r, err
	}
	defer s.stop()
	m0, err := s.mem()
	if err != nil {
		return r, err
	}
	p0, err := s.pss()
	if err != nil {
		return r, err
	}
	clients := make([]*client, n)
	var wg sync.WaitGroup
	var firstErr atomic.Value
	sem := make(chan struct{}, 32)
	for i := range clients {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			cl, err := dial(s.addr, i)
			if err == nil {
				err = cl.options()
			}
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			clients[i] = cl
		}()
	}
	wg.Wait()
	defer func() {
		for _, cl := range clients {
			if cl != nil {
				_ = cl.conn.Close()
			}
		}
	}()
	if err, _ := firstErr.Load().(error); err != nil {
		return r, err
	}
	time.Sleep(time.Second)
	m1, err := s.mem()
	if err != nil {
		return r, err
	}
	p1, err := s.pss()
	if err != nil {
		return r, err
	}
	r.heapStack = (float64(m1.HeapInuse+m1.StackInuse) - float64(m0.HeapInuse+m0.StackInuse)) / float64(n)
	r.pss = (p1 - p0) / float64(n)
	r.goroutines = float64(m1.Goroutines-m0.Goroutines) / float64(n)

	cpu0, err := s.cpu()
	if err != nil {
		return r, err
	}
	var done atomic.Int64
	stop := time.Now().Add(d)
	for _, cl := range clients[:min(c, n)] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if err := cl.options(); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	cpu1, err := s.cpu()
	if err != nil {
		return r, err
	}
	if err, _ := firstErr.Load().(error); err != nil {
		return r, err
	}
	r.cpuPerReq = (cpu1 - cpu0) / float64(done.Load())
	r.rps = float64(done.Load()) / d.Seconds()
	return r, nil
}
