// Command cluster is the benchmark of the web phone's cluster mode
// (examples/webphone -node/-redis/-sip-addr): it starts a redis-server of
// its own on a loopback port and N webphone nodes, registers P phones spread
// over the nodes (REGISTERs per second, over C connections registering at
// once), then measures the round trip of a MESSAGE and its 200 OK between
// two phones on the same node and between two phones on different nodes:
// the difference is the extra latency of crossing nodes (SIP over TCP to
// the node of the flow, and the Redis lookup). The same runs against one
// node without Redis give the baseline of the in-memory store.
//
//	go build -o /tmp/webphone ./examples/webphone
//	go run ./bench/cluster -webphone /tmp/webphone -nodes 3 -phones 3000
//
// One JSON line of results goes to stdout, a readable summary to stderr.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

const domain = "sipws.test"

func main() {
	bin := flag.String("webphone", "", "webphone `binary` (go build -o … ./examples/webphone)")
	nodes := flag.Int("nodes", 3, "cluster nodes")
	phones := flag.Int("phones", 3000, "registered phones, spread evenly over the nodes")
	conc := flag.Int("concurrency", 64, "REGISTERs in flight at once")
	msgs := flag.Int("messages", 2000, "MESSAGE round trips per case (same node, across nodes)")
	single := flag.Bool("single", false, "one node without Redis (the in-memory store), for the baseline")
	flag.Parse()
	if *bin == "" {
		fmt.Fprintln(os.Stderr, "cluster: -webphone is required")
		os.Exit(2)
	}
	res, err := run(*bin, *nodes, *phones, *conc, *msgs, *single)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		os.Exit(1)
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
}

type result struct {
	Nodes           int     `json:"nodes"`
	Redis           bool    `json:"redis"`
	Phones          int     `json:"phones"`
	Concurrency     int     `json:"concurrency"`
	RegistersPerSec float64 `json:"registers_per_sec"`
	RegisterP50us   float64 `json:"register_p50_us"`
	RegisterP99us   float64 `json:"register_p99_us"`
	SameNodeP50us   float64 `json:"message_same_node_p50_us"`
	SameNodeP99us   float64 `json:"message_same_node_p99_us"`
	CrossNodeP50us  float64 `json:"message_cross_node_p50_us,omitempty"`
	CrossNodeP99us  float64 `json:"message_cross_node_p99_us,omitempty"`
	ExtraP50us      float64 `json:"extra_latency_p50_us,omitempty"`
}

func run(bin string, nNodes, nPhones, conc, nMsgs int, single bool) (*result, error) {
	var procs []*exec.Cmd
	defer func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
	}()
	var redisURL string
	if !single {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		dir, err := os.MkdirTemp("", "bench-redis-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		rs := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "warning")
		if err := rs.Start(); err != nil {
			return nil, fmt.Errorf("redis-server: %w (apt-get install redis-server)", err)
		}
		procs = append(procs, rs)
		redisURL = fmt.Sprintf("redis://127.0.0.1:%d/0", port)
		time.Sleep(300 * time.Millisecond)
	} else {
		nNodes = 1
	}
	var urls []string
	for i := range nNodes {
		args := []string{"-addr", "127.0.0.1:0"}
		if !single {
			args = append(args, "-node", fmt.Sprintf("n%d", i), "-redis", redisURL, "-sip-addr", "127.0.0.1:0")
		}
		cmd, url, err := startNode(bin, args)
		if err != nil {
			return nil, err
		}
		procs = append(procs, cmd)
		urls = append(urls, url)
	}
	time.Sleep(2 * time.Second) // every node has seen the others' heartbeats

	// Connect and register, conc at a time.
	ph := make([]*phone, nPhones)
	for i := range ph {
		p, err := dial(urls[i%len(urls)], fmt.Sprintf("u%05d", i))
		if err != nil {
			return nil, fmt.Errorf("phone %d: %w", i, err)
		}
		defer p.close()
		ph[i] = p
	}
	var regLat []time.Duration
	var mu sync.Mutex
	var next atomic.Int64
	var failed atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= len(ph) {
					return
				}
				t0 := time.Now()
				code, err := ph[i].register()
				d := time.Since(t0)
				if err != nil || code != 200 {
					failed.Add(1)
					continue
				}
				mu.Lock()
				regLat = append(regLat, d)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	regTime := time.Since(start)
	if failed.Load() > 0 {
		return nil, fmt.Errorf("%d REGISTERs failed", failed.Load())
	}
	res := &result{Nodes: nNodes, Redis: !single, Phones: nPhones, Concurrency: conc,
		RegistersPerSec: float64(nPhones) / regTime.Seconds()}
	res.RegisterP50us, res.RegisterP99us = pct(regLat, 50), pct(regLat, 99)
	fmt.Fprintf(os.Stderr, "%d REGISTERs on %d node(s) in %v: %.0f/s (p50 %.0f µs, p99 %.0f µs)\n",
		nPhones, nNodes, regTime.Round(time.Millisecond), res.RegistersPerSec, res.RegisterP50us, res.RegisterP99us)

	// MESSAGE round trips, one at a time, from phones of node 0 (i%nodes
	// == 0; 100 of them in turn, as each connection's transactions are
	// budgeted) to phones on node 0 and, with several nodes, on node 1.
	measure := func(to func(k int) int) ([]time.Duration, error) {
		var lat []time.Duration
		for k := range nMsgs {
			dst := ph[to(k)]
			src := ph[(k%100)*nNodes]
			t0 := time.Now()
			code, err := src.message(dst.user, k)
			if err != nil {
				return nil, err
			}
			if code != 200 {
				return nil, fmt.Errorf("MESSAGE to %s: %d", dst.user, code)
			}
			lat = append(lat, time.Since(t0))
		}
		return lat, nil
	}
	// Warm-up: links between nodes dialled, caches filled.
	if _, err := measure(func(k int) int { return (k%(nPhones/nNodes-1) + 1) * nNodes }); err != nil {
		return nil, err
	}
	same, err := measure(func(k int) int { return (k%(nPhones/nNodes-1) + 1) * nNodes })
	if err != nil {
		return nil, err
	}
	res.SameNodeP50us, res.SameNodeP99us = pct(same, 50), pct(same, 99)
	fmt.Fprintf(os.Stderr, "MESSAGE round trip, same node: p50 %.0f µs, p99 %.0f µs\n", res.SameNodeP50us, res.SameNodeP99us)
	if nNodes > 1 {
		if _, err := measure(func(k int) int { return (k%(nPhones/nNodes-1))*nNodes + 1 }); err != nil {
			return nil, err
		}
		cross, err := measure(func(k int) int { return (k%(nPhones/nNodes-1))*nNodes + 1 })
		if err != nil {
			return nil, err
		}
		res.CrossNodeP50us, res.CrossNodeP99us = pct(cross, 50), pct(cross, 99)
		res.ExtraP50us = res.CrossNodeP50us - res.SameNodeP50us
		fmt.Fprintf(os.Stderr, "MESSAGE round trip, across nodes: p50 %.0f µs, p99 %.0f µs (extra p50 %.0f µs)\n", res.CrossNodeP50us, res.CrossNodeP99us, res.ExtraP50us)
	}
	return res, nil
}

func pct(ds []time.Duration, p int) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[min(len(s)-1, len(s)*p/100)].Microseconds())
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

var listening = regexp.MustCompile(`listening on (http://[^\s"]+)/`)

// startNode starts the webphone and returns its ws URL once it logs it.
func startNode(bin string, args []string) (*exec.Cmd, string, error) {
	cmd := exec.Command(bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case u := <-found:
		return cmd, "ws" + strings.TrimPrefix(u, "http") + "/ws", nil
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, "", errors.New("webphone did not start")
	}
}

// phone is a SIP-over-WebSocket client: it answers MESSAGEs with 200 and
// hands responses to the one request it has outstanding.
type phone struct {
	user string
	conn net.Conn
	wmu  sync.Mutex
	res  chan *sip.Response
	seq  int
}

func dial(url, user string) (*phone, error) {
	d := ws.Dialer{Protocols: []string{"sip"}, Timeout: 5 * time.Second}
	conn, _, _, err := d.Dial(context.Background(), url)
	if err != nil {
		return nil, err
	}
	p := &phone{user: user, conn: conn, res: make(chan *sip.Response, 4)}
	go p.read()
	return p, nil
}

func (p *phone) close() { _ = p.conn.Close() }

func (p *phone) write(b []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	return wsutil.WriteClientText(p.conn, b)
}

func (p *phone) read() {
	for {
		data, _, err := wsutil.ReadServerData(p.conn)
		if err != nil {
			close(p.res)
			return
		}
		m, err := sip.ParseMessage(data)
		if err != nil {
			continue
		}
		switch m := m.(type) {
		case *sip.Response:
			select {
			case p.res <- m:
			default:
			}
		case *sip.Request:
			if m.Method == sip.MESSAGE {
				_ = p.write([]byte(sip.NewResponseFromRequest(m, 200, "OK", nil).String()))
			}
		}
	}
}

func (p *phone) await() (int, error) {
	select {
	case r, ok := <-p.res:
		if !ok {
			return 0, io.ErrUnexpectedEOF
		}
		return r.StatusCode, nil
	case <-time.After(10 * time.Second):
		return 0, errors.New("no response in 10 s")
	}
}

func (p *phone) send(msg string) (int, error) {
	wire := strings.ReplaceAll(msg, "\n", "\r\n")
	if err := p.write([]byte(wire)); err != nil {
		return 0, err
	}
	return p.await()
}

func (p *phone) register() (int, error) {
	p.seq++
	return p.send(fmt.Sprintf(`REGISTER sip:%[1]s SIP/2.0
Via: SIP/2.0/WS %[2]s.invalid;branch=z9hG4bKr%[2]s%[3]d
Max-Forwards: 70
To: <sip:%[2]s@%[1]s>
From: <sip:%[2]s@%[1]s>;tag=t%[2]s
Call-ID: reg-%[2]s
CSeq: %[3]d REGISTER
Contact: <sip:%[2]s@%[2]s.invalid;transport=ws>;reg-id=1;+sip.instance="<urn:uuid:%[2]s>";expires=600
Supported: path, outbound
Content-Length: 0

`, domain, p.user, p.seq))
}

func (p *phone) message(to string, k int) (int, error) {
	p.seq++
	body := "bench " + strconv.Itoa(k)
	return p.send(fmt.Sprintf(`MESSAGE sip:%[1]s@%[2]s SIP/2.0
Via: SIP/2.0/WS %[3]s.invalid;branch=z9hG4bKm%[3]s%[4]d
Max-Forwards: 70
To: <sip:%[1]s@%[2]s>
From: <sip:%[3]s@%[2]s>;tag=t%[3]s
Call-ID: msg-%[3]s-%[4]d
CSeq: 1 MESSAGE
Content-Type: text/plain
Content-Length: %[5]d

%[6]s`, to, domain, p.user, p.seq, len(body), body))
}
