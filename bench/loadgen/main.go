// Command loadgen is the load generator of the benchmark suite
// (bench/run.sh). It speaks WebSocket with its own minimal RFC 6455 client
// (masked frames, Sec-WebSocket-Protocol: sip, Sec-WebSocket-Accept checked)
// to a server on a loopback address, and prints one JSON line of results on
// stdout.
//
//	loadgen -mode rps -addr 127.0.0.1:18081 -conns 100 -duration 10s [-server-pid PID]
//	loadgen -mode handshake -addr 127.0.0.1:18081 -loops 50 -duration 10s
//	loadgen -mode idle -addr 127.0.0.1:18081 -conns 10000
//
// rps: each of -conns connections keeps exactly one SIP OPTIONS outstanding
// and sends the next when the 200 OK is in; after -warmup, it counts the
// requests answered in -duration and their latency (p50, p99, p99.9).
// handshake: -loops loops each open a connection, negotiate sip, and close
// it cleanly (close frame, the server's close reply, the server's FIN), as
// fast as they can. idle: opens -conns connections, prints "READY n" on
// stdout once they are open, and holds them, answering Pings, until SIGINT,
// SIGTERM or -hold.
//
// With -server-pid, rps and handshake also measure the server's CPU time
// (utime+stime of the process and all its descendants, /proc/PID/stat) and
// read/write syscalls (/proc/PID/io) over the measured window, per request
// or handshake. Connections are spread over the source addresses
// 127.0.0.2 … 127.0.0.(1+-sources) to have enough ephemeral ports. Every loop
// is bounded in count (-max-requests) and time; only loopback targets are
// accepted.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sipws/sipws/bench/internal/sipopts"
)

type config struct {
	mode        string
	addr        string
	path        string
	conns       int
	loops       int
	duration    time.Duration
	warmup      time.Duration
	sources     int
	rate        int
	parallel    int
	hold        time.Duration
	timeout     time.Duration
	serverPID   int
	maxRequests int64
	tags        tagFlags
}

// tagFlags are -tag key=value pairs copied into the JSON result.
type tagFlags [][2]string

func (t *tagFlags) String() string { return fmt.Sprint(*t) }
func (t *tagFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	*t = append(*t, [2]string{k, v})
	return nil
}

func main() {
	var c config
	flag.StringVar(&c.mode, "mode", "rps", "`mode`: rps, handshake or idle")
	flag.StringVar(&c.addr, "addr", "127.0.0.1:18081", "server `IP:port` (IPv4 loopback only)")
	flag.StringVar(&c.path, "path", "/", "request path of the handshake")
	flag.IntVar(&c.conns, "conns", 100, "connections (rps, idle)")
	flag.IntVar(&c.loops, "loops", 50, "concurrent handshake loops (handshake)")
	flag.DurationVar(&c.duration, "duration", 10*time.Second, "measured time (rps, handshake)")
	flag.DurationVar(&c.warmup, "warmup", 2*time.Second, "unmeasured time before it (rps, handshake)")
	flag.IntVar(&c.sources, "sources", 8, "source addresses: 127.0.0.2 … 127.0.0.(1+`n`)")
	flag.IntVar(&c.rate, "rate", 5000, "connections opened per second at most (rps, idle)")
	flag.IntVar(&c.parallel, "parallel", 32, "handshakes in flight at once while opening connections (rps, idle)")
	flag.DurationVar(&c.hold, "hold", 15*time.Minute, "idle: longest time the connections are held")
	flag.DurationVar(&c.timeout, "timeout", 10*time.Second, "bound of one connect+handshake, and of a close handshake")
	flag.IntVar(&c.serverPID, "server-pid", 0, "`PID` of the server (with its descendants) to measure CPU time and syscalls of; 0: none")
	flag.Int64Var(&c.maxRequests, "max-requests", 1e9, "bound on requests (rps) or handshakes (handshake) per connection or loop")
	flag.Var(&c.tags, "tag", "`key=value` added to the JSON result (repeatable)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("mode", c.mode)
	if flag.NArg() > 0 {
		log.Error("unexpected arguments", "args", flag.Args())
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := run(ctx, log, c)
	if res != nil {
		for _, kv := range c.tags {
			if n, err := strconv.ParseFloat(kv[1], 64); err == nil {
				res[kv[0]] = n
			} else {
				res[kv[0]] = kv[1]
			}
		}
		b, _ := json.Marshal(res)
		fmt.Println(string(b))
	}
	if err != nil {
		log.Error("loadgen failed", "err", err)
		os.Exit(1)
	}
}

type result = map[string]any

func run(ctx context.Context, log *slog.Logger, c config) (result, error) {
	if c.conns < 1 || c.conns > 100000 {
		return nil, fmt.Errorf("-conns %d: want 1..100000", c.conns)
	}
	if c.loops < 1 || c.loops > 10000 {
		return nil, fmt.Errorf("-loops %d: want 1..10000", c.loops)
	}
	if c.duration <= 0 || c.warmup < 0 || c.timeout <= 0 || c.hold <= 0 || c.rate < 1 || c.parallel < 1 || c.maxRequests < 1 {
		return nil, errors.New("-duration, -timeout, -hold, -rate, -parallel and -max-requests must be positive, -warmup not negative")
	}
	d, err := newDialer(c.addr, c.path, c.sources, c.timeout)
	if err != nil {
		return nil, err
	}
	switch c.mode {
	case "rps":
		return runRPS(ctx, log, c, d)
	case "handshake":
		return runHandshake(ctx, log, c, d)
	case "idle":
		return runIdle(ctx, log, c, d)
	}
	return nil, fmt.Errorf("-mode %q: want rps, handshake or idle", c.mode)
}

// errorLog keeps the first few errors and counts all.
type errorLog struct {
	n     atomic.Int64
	mu    sync.Mutex
	first []string
}

func (e *errorLog) add(err error) {
	if e.n.Add(1) <= 5 {
		e.mu.Lock()
		e.first = append(e.first, err.Error())
		e.mu.Unlock()
	}
}

func (e *errorLog) report(r result) {
	r["errors"] = e.n.Load()
	if len(e.first) > 0 {
		r["first_errors"] = e.first
	}
}

// openConns opens n connections, at most rate per second and parallel at a
// time. It stops at the first failure past 1% (+10) of n, or when ctx ends.
func openConns(ctx context.Context, d *dialer, n, rate, parallel, rbuf int, errs *errorLog) []*wsConn {
	conns := make([]*wsConn, n)
	var next atomic.Int64
	var failed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range min(parallel, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil || failed.Load() > int64(n/100+10) {
					return
				}
				if wait := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); wait > 0 {
					time.Sleep(wait)
				}
				c, err := d.dial(i, rbuf)
				if err != nil {
					failed.Add(1)
					errs.add(fmt.Errorf("connection %d: %w", i, err))
					continue
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	out := conns[:0]
	for _, c := range conns {
		if c != nil {
			out = append(out, c)
		}
	}
	return out
}

// window measures the server (when a PID is given) and this process between
// two instants.
type window struct {
	pid        int
	t0, t1     time.Time
	u0, u1     procUsage
	self0      time.Duration
	self1      time.Duration
	usageError error
}

func (w *window) begin() {
	w.t0 = time.Now()
	w.self0 = selfCPU()
	if w.pid > 0 {
		w.u0, w.usageError = usage(w.pid)
	}
}

func (w *window) end() {
	w.t1 = time.Now()
	w.self1 = selfCPU()
	if w.pid > 0 && w.usageError == nil {
		w.u1, w.usageError = usage(w.pid)
	}
}

// report adds the window's figures, per unit of work (n requests or
// handshakes, named unit).
func (w *window) report(r result, n int64, unit string) {
	secs := w.t1.Sub(w.t0).Seconds()
	r["window_s"] = round(secs, 3)
	r["loadgen_cpu_pct"] = round((w.self1-w.self0).Seconds()/secs*100, 1)
	if w.pid == 0 {
		return
	}
	if w.usageError != nil {
		r["server_usage_error"] = w.usageError.Error()
		return
	}
	cpu := (w.u1.cpu - w.u0.cpu).Seconds()
	r["server_procs"] = w.u1.procs
	r["server_cpu_s"] = round(cpu, 3)
	r["server_cpu_pct"] = round(cpu/secs*100, 1)
	if n > 0 {
		r["server_cpu_us_per_"+unit] = round(cpu*1e6/float64(n), 3)
		r["server_reads_per_"+unit] = round(float64(w.u1.reads-w.u0.reads)/float64(n), 3)
		r["server_writes_per_"+unit] = round(float64(w.u1.writes-w.u0.writes)/float64(n), 3)
	}
}

func round(v float64, digits int) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'f', digits, 64), 64)
	return f
}

func us(d time.Duration) float64 { return round(float64(d)/1e3, 1) }

// stopFlag turns ctx's end into a cheap flag the hot loops read.
func stopFlag(ctx context.Context) *atomic.Bool {
	var f atomic.Bool
	context.AfterFunc(ctx, func() { f.Store(true) })
	return &f
}

func runRPS(ctx context.Context, log *slog.Logger, c config, d *dialer) (result, error) {
	errs := &errorLog{}
	r := result{"mode": "rps", "conns": c.conns, "duration_s": c.duration.Seconds()}
	t := time.Now()
	conns := openConns(ctx, d, c.conns, c.rate, c.parallel, 4096, errs)
	r["connect_s"] = round(time.Since(t).Seconds(), 3)
	defer func() {
		for _, wc := range conns {
			wc.abort()
		}
	}()
	if len(conns) < c.conns {
		errs.report(r)
		return r, fmt.Errorf("opened %d of %d connections", len(conns), c.conns)
	}
	log.Info("connections open", "conns", len(conns), "in", time.Since(t).Round(time.Millisecond))

	req := []byte(sipopts.Request)
	stop := stopFlag(ctx)
	var h hist
	var counted atomic.Int64
	start := time.Now()
	mStart, mEnd := start.Add(c.warmup), start.Add(c.warmup+c.duration)
	var wg sync.WaitGroup
	for _, wc := range conns {
		wg.Go(func() {
			var n int64
			defer func() { counted.Add(n) }()
			for i := range c.maxRequests {
				t0 := time.Now()
				if t0.After(mEnd) || stop.Load() {
					return
				}
				if err := wc.writeFrame(opText, req); err != nil {
					errs.add(fmt.Errorf("send: %w", err))
					return
				}
				if err := wc.readReply(i == 0); err != nil {
					errs.add(err)
					return
				}
				t1 := time.Now()
				if !t0.Before(mStart) && !t1.After(mEnd) {
					h.record(t1.Sub(t0))
					n++
				}
			}
		})
	}
	w := window{pid: c.serverPID}
	sleepUntil(ctx, mStart)
	w.begin()
	sleepUntil(ctx, mEnd)
	w.end()
	waitBounded(&wg, c.timeout, conns)

	n := counted.Load()
	q, _ := h.quantiles(0.5, 0.99, 0.999)
	r["requests"] = n
	r["rps"] = round(float64(n)/c.duration.Seconds(), 1)
	r["p50_us"], r["p99_us"], r["p999_us"] = us(q[0]), us(q[1]), us(q[2])
	r["max_us"] = us(time.Duration(h.max.Load()))
	w.report(r, n, "req")
	errs.report(r)
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if errs.n.Load() > 0 {
		return r, fmt.Errorf("%d errors", errs.n.Load())
	}
	return r, nil
}

// readReply reads frames until the 200 OK to our OPTIONS, answering Pings on
// the way. The first reply of a connection is checked in full, later ones by
// their status line.
func (wc *wsConn) readReply(full bool) error {
	for range 16 {
		op, fin, err := wc.readFrame()
		if err != nil {
			return fmt.Errorf("read reply: %w", err)
		}
		switch op {
		case opPing:
			if err := wc.writeFrame(opPong, wc.in); err != nil {
				return fmt.Errorf("pong: %w", err)
			}
			continue
		case opPong:
			continue
		case opClose:
			return fmt.Errorf("server closed the connection (%d)", closeCode(wc.in))
		case opText, opBin:
		default:
			return fmt.Errorf("%w: opcode %#x instead of a reply", errProtocol, op)
		}
		if !fin {
			return fmt.Errorf("%w: fragmented reply", errProtocol)
		}
		return checkReply(wc.in, full)
	}
	return errors.New("no reply in 16 frames")
}

// checkReply checks a 200 OK to sipopts.Request.
func checkReply(p []byte, full bool) error {
	if !bytes.HasPrefix(p, []byte("SIP/2.0 200 OK\r\n")) {
		return fmt.Errorf("reply is not a 200 OK: %.40q", p)
	}
	if !full {
		return nil
	}
	for _, want := range []string{
		"\r\nCall-ID: 2q9tk0ld1v6e3d5oqv8r\r\n",
		"\r\nCSeq: 8421 OPTIONS\r\n",
		";tag=6c2b4k9u0e\r\n",
		"branch=z9hG4bK5g1h8v",
		"\r\n\r\n",
	} {
		if !bytes.Contains(p, []byte(want)) {
			return fmt.Errorf("reply lacks %q: %q", want, p)
		}
	}
	// To must have gained a tag.
	for line := range bytes.SplitSeq(p, []byte("\r\n")) {
		if bytes.HasPrefix(line, []byte("To:")) || bytes.HasPrefix(line, []byte("t:")) {
			if !bytes.Contains(line, []byte(";tag=")) {
				return fmt.Errorf("reply's To has no tag: %q", line)
			}
			return nil
		}
	}
	return fmt.Errorf("reply has no To: %q", p)
}

func sleepUntil(ctx context.Context, t time.Time) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Until(t)):
	}
}

// waitBounded waits for wg; after bound it closes conns to unblock readers.
func waitBounded(wg *sync.WaitGroup, bound time.Duration, conns []*wsConn) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return
	case <-time.After(bound):
	}
	for _, wc := range conns {
		wc.abort()
	}
	<-done
}

func runHandshake(ctx context.Context, log *slog.Logger, c config, d *dialer) (result, error) {
	errs := &errorLog{}
	r := result{"mode": "handshake", "loops": c.loops, "duration_s": c.duration.Seconds()}
	stop := stopFlag(ctx)
	var h hist
	var counted atomic.Int64
	start := time.Now()
	mStart, mEnd := start.Add(c.warmup), start.Add(c.warmup+c.duration)
	var wg sync.WaitGroup
	for loop := range c.loops {
		wg.Go(func() {
			var n int64
			defer func() { counted.Add(n) }()
			for i := range c.maxRequests {
				t0 := time.Now()
				if t0.After(mEnd) || stop.Load() {
					return
				}
				// Rotate the source address over loops and iterations.
				wc, err := d.dial(loop+int(i)*c.loops, 1024)
				if err != nil {
					errs.add(err)
					time.Sleep(10 * time.Millisecond) // no hot spin on a refusing server
					continue
				}
				t1 := time.Now()
				if err := wc.closeHandshake(c.timeout); err != nil {
					errs.add(err)
					continue
				}
				t2 := time.Now()
				if !t0.Before(mStart) && !t2.After(mEnd) {
					h.record(t1.Sub(t0))
					n++
				}
			}
		})
	}
	w := window{pid: c.serverPID}
	sleepUntil(ctx, mStart)
	w.begin()
	sleepUntil(ctx, mEnd)
	w.end()
	waitBounded(&wg, 2*c.timeout, nil)

	n := counted.Load()
	q, _ := h.quantiles(0.5, 0.99)
	r["handshakes"] = n
	r["hps"] = round(float64(n)/c.duration.Seconds(), 1)
	r["connect_p50_us"], r["connect_p99_us"] = us(q[0]), us(q[1])
	w.report(r, n, "hs")
	errs.report(r)
	log.Info("done", "handshakes/s", r["hps"], "errors", errs.n.Load())
	if ctx.Err() != nil {
		return r, ctx.Err()
	}
	if errs.n.Load() > n/1000 {
		return r, fmt.Errorf("%d errors for %d handshakes", errs.n.Load(), n)
	}
	return r, nil
}

func runIdle(ctx context.Context, log *slog.Logger, c config, d *dialer) (result, error) {
	errs := &errorLog{}
	r := result{"mode": "idle", "conns": c.conns}
	ctx, cancel := context.WithTimeout(ctx, c.hold)
	defer cancel()
	t := time.Now()
	conns := openConns(ctx, d, c.conns, c.rate, c.parallel, 512, errs)
	r["opened"] = len(conns)
	r["connect_s"] = round(time.Since(t).Seconds(), 3)
	var pings, open atomic.Int64
	var wg sync.WaitGroup
	for _, wc := range conns {
		open.Add(1)
		wg.Go(func() {
			defer open.Add(-1)
			for {
				op, _, err := wc.readFrame()
				if err != nil {
					if ctx.Err() == nil {
						errs.add(fmt.Errorf("idle connection: %w", err))
					}
					return
				}
				switch op {
				case opPing:
					pings.Add(1)
					if err := wc.writeFrame(opPong, wc.in); err != nil {
						errs.add(fmt.Errorf("pong: %w", err))
						return
					}
				case opClose:
					errs.add(fmt.Errorf("server closed an idle connection (%d)", closeCode(wc.in)))
					_ = wc.writeFrame(opClose, wc.in)
					wc.abort()
					return
				}
			}
		})
	}
	log.Info("connections open", "opened", len(conns), "of", c.conns, "in", time.Since(t).Round(time.Millisecond))
	fmt.Println("READY", len(conns))
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
hold:
	for {
		select {
		case <-ctx.Done():
			break hold
		case <-tick.C:
			log.Info("holding", "open", open.Load(), "pings", pings.Load())
		}
	}
	r["open_at_end"] = open.Load()
	r["pings"] = pings.Load()
	r["held_s"] = round(time.Since(t).Seconds(), 1)
	for _, wc := range conns {
		wc.abort()
	}
	waitBounded(&wg, c.timeout, nil)
	errs.report(r)
	if len(conns) < c.conns {
		return r, fmt.Errorf("opened %d of %d connections", len(conns), c.conns)
	}
	return r, nil
}
