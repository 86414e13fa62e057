// Command h2idle measures the server's memory per idle WebSocket carried by
// an HTTP/2 stream (RFC 8441) against one on its own HTTP/1.1 connection.
// It starts a sipws server on a loopback TLS listener that offers h2 and
// http/1.1, runs itself as the client in a child process (so that the
// client's memory is not counted), which opens -n idle WebSockets the way
// asked and holds them, and prints the server's growth per connection: heap
// and goroutine stacks in use (runtime.MemStats), goroutines, and PSS
// (/proc/self/smaps_rollup). Run it as
//
//	GODEBUG=http2xconnect=1 go run ./bench/h2idle -proto h2 -n 2000
//	GODEBUG=http2xconnect=1 go run ./bench/h2idle -proto http/1.1 -n 2000
//
// HTTP/2 streams are opened over -n/200 TCP connections (the server allows
// 250 streams per connection, Go's default).
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gobwas/ws"
	"github.com/sipws/sipws"
	"golang.org/x/net/http2"
)

func main() {
	proto := flag.String("proto", "h2", "how the client carries each WebSocket: h2 (RFC 8441) or http/1.1")
	n := flag.Int("n", 2000, "idle connections")
	client := flag.String("client", "", "internal: run as the client against this https URL")
	flag.Parse()
	var err error
	if *client != "" {
		err = runClient(*client, *proto, *n)
	} else {
		err = runServer(*proto, *n)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "h2idle:", err)
		os.Exit(1)
	}
}

// sample is the server's memory at one moment.
type sample struct {
	heap, stack, pss uint64
	goroutines       int
}

func measure() sample {
	for range 3 {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return sample{heap: ms.HeapInuse, stack: ms.StackInuse, pss: pss(), goroutines: runtime.NumGoroutine()}
}

// pss returns the process's proportional set size in bytes (0 when unknown).
func pss() uint64 {
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		return 0
	}
	for l := range strings.SplitSeq(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "Pss:" {
			kb, _ := strconv.ParseUint(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func runServer(proto string, n int) error {
	if proto == "h2" && !strings.Contains(os.Getenv("GODEBUG"), "http2xconnect=1") {
		return fmt.Errorf("-proto h2 needs GODEBUG=http2xconnect=1 in the environment")
	}
	srv, err := sipws.New(sipws.Config{})
	if err != nil {
		return err
	}
	hs := httptest.NewUnstartedServer(srv)
	hs.EnableHTTP2 = true
	hs.StartTLS()
	defer hs.Close()
	before := measure()

	cmd := exec.Command(os.Args[0], "-client", hs.URL, "-proto", proto, "-n", strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "READY") {
		_ = cmd.Process.Kill()
		return fmt.Errorf("client: %q %v", line, err)
	}
	time.Sleep(2 * time.Second)
	if got := srv.Registry().Len(); got != n {
		_ = cmd.Process.Kill()
		return fmt.Errorf("%d connections open, want %d", got, n)
	}
	after := measure()
	per := func(a, b uint64) float64 { return (float64(a) - float64(b)) / float64(n) }
	fmt.Printf("%s, %d idle WebSockets: per connection heap %.0f B, stacks %.0f B, heap+stacks %.0f B, PSS %.0f B, goroutines %.2f\n",
		proto, n, per(after.heap, before.heap), per(after.stack, before.stack),
		per(after.heap+after.stack, before.heap+before.stack), per(after.pss, before.pss),
		float64(after.goroutines-before.goroutines)/float64(n))
	_ = stdin.Close() // the client exits
	_ = cmd.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}

func runClient(url, proto string, n int) error {
	tlsConf := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // loopback test server's own certificate
	var hold []io.Closer
	switch proto {
	case "h2":
		var tr *http2.Transport
		for i := range n {
			if i%200 == 0 { // a new TCP connection every 200 streams
				tr = &http2.Transport{TLSClientConfig: tlsConf}
			}
			pr, pw := io.Pipe()
			req, err := http.NewRequest(http.MethodConnect, url+"/", pr)
			if err != nil {
				return err
			}
			req.Header.Set(":protocol", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Protocol", "sip")
			resp, err := tr.RoundTrip(req)
			if err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("connection %d: %s", i, resp.Status)
			}
			hold = append(hold, pw, resp.Body)
		}
	case "http/1.1":
		d := ws.Dialer{Protocols: []string{"sip"}, TLSConfig: &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}} //nolint:gosec // as above
		for i := range n {
			c, _, _, err := d.Dial(context.Background(), "wss"+strings.TrimPrefix(url, "https")+"/")
			if err != nil {
				return fmt.Errorf("connection %d: %w", i, err)
			}
			hold = append(hold, c)
		}
	default:
		return fmt.Errorf("-proto %q: want h2 or http/1.1", proto)
	}
	fmt.Println("READY", n)
	_, _ = io.Copy(io.Discard, os.Stdin) // until the server closes stdin
	for _, c := range hold {
		_ = c.Close()
	}
	return nil
}
