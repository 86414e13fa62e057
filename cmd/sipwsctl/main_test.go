package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const ioTimeout = 5 * time.Second

// binary is sipwsctl built by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sipwsctl-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "sipwsctl")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0") // go install-able without cgo
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building sipwsctl: %v\n%s", err, out)
		_ = os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// result is one run of the binary.
type result struct {
	Code           int
	Stdout, Stderr string
}

// ctl runs sipwsctl with args, bounded in time.
func ctl(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*ioTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("running sipwsctl %v: %v", args, err)
	}
	require.NoError(t, ctx.Err(), "sipwsctl %v did not finish", args)
	return result{code, stdout.String(), stderr.String()}
}

// live is a sipws server with WebSocket clients connected and its RPC
// handler on a second loopback server.
type live struct {
	srv    *sipws.Server
	rpcURL string
	conns  []*sipws.Conn
	nets   []net.Conn
}

func startLive(t *testing.T, protos ...string) *live {
	t.Helper()
	opened := make(chan *sipws.Conn, len(protos))
	srv, err := sipws.New(sipws.Config{
		PingData:     []byte("ctl-ping"),
		CloseTimeout: ioTimeout,
		OnOpen:       func(c *sipws.Conn) { opened <- c },
	})
	require.NoError(t, err)
	wsHS := httptest.NewServer(srv)
	rpcHS := httptest.NewServer(sipws.NewRPCHandler(srv, nil))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*ioTimeout)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
		wsHS.Close()
		rpcHS.Close()
	})
	l := &live{srv: srv, rpcURL: rpcHS.URL + "/RPC"}
	for _, p := range protos {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		nc, _, _, err := ws.Dialer{Protocols: []string{p}}.Dial(ctx, "ws"+strings.TrimPrefix(wsHS.URL, "http")+"/")
		cancel()
		require.NoError(t, err)
		t.Cleanup(func() { _ = nc.Close() })
		select {
		case c := <-opened:
			l.conns = append(l.conns, c)
			l.nets = append(l.nets, nc)
		case <-time.After(ioTimeout):
			t.Fatal("no connection opened")
		}
	}
	return l
}

func TestDumpTable(t *testing.T) {
	l := startLive(t, "sip", "sip", "msrp")
	r := ctl(t, "-url", l.rpcURL, "ws.dump")
	require.Equal(t, 0, r.Code, "stderr: %s", r.Stderr)
	assert.Empty(t, r.Stderr)
	t.Logf("sipwsctl ws.dump:\n%s", r.Stdout)
	lines := strings.Split(strings.TrimSuffix(r.Stdout, "\n"), "\n")
	require.Len(t, lines, 5, r.Stdout)
	header := lines[0]
	assert.Regexp(t, `^ID +SRC +DST +SUBPROTO +STATE +LAST USED +AWAITING PONG +RTT$`, header)
	row := regexp.MustCompile(`^(\d+) +(ws:127\.0\.0\.1:\d+) +(ws:127\.0\.0\.1:\d+) +(sip|msrp) +OPEN +\d+s ago +no +-$`)
	for i, c := range l.conns {
		m := row.FindStringSubmatch(lines[1+i])
		require.NotNil(t, m, "row %q", lines[1+i])
		assert.Equal(t, fmt.Sprint(c.ID()), m[1])
		assert.Equal(t, "ws:"+l.nets[i].LocalAddr().String(), m[2])
		assert.Equal(t, "ws:"+c.LocalAddr().String(), m[3])
		assert.Equal(t, c.Subprotocol().String(), m[4])
		// Columns are aligned under their headers.
		for _, col := range []string{"SRC", "DST", "SUBPROTO", "STATE"} {
			at := strings.Index(header, col)
			assert.NotEqual(t, ' ', lines[1+i][at], "%s column of %q", col, lines[1+i])
			assert.Equal(t, byte(' '), lines[1+i][at-1], "%s column of %q", col, lines[1+i])
		}
	}
	assert.Equal(t, "3 listed of 3", lines[4])

	r = ctl(t, "-url", l.rpcURL, "ws.dump", "id_hash", "2")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.True(t, strings.HasSuffix(r.Stdout, "\n2 listed of 3 (truncated)\n"), r.Stdout)

	r = ctl(t, "-url", l.rpcURL, "ws.dump", "used_desc", "-1", "0", "msrp")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, " msrp ")
	assert.NotContains(t, r.Stdout, " sip ")
	assert.True(t, strings.HasSuffix(r.Stdout, "\n1 listed of 1\n"), r.Stdout)

	// Raw JSON.
	r = ctl(t, "-url", l.rpcURL, "-json", "ws.dump")
	require.Equal(t, 0, r.Code, r.Stderr)
	var d struct {
		Connections []struct {
			ID uint64 `json:"id"`
		} `json:"connections"`
		Info struct {
			WSCounter int `json:"wscounter"`
		} `json:"info"`
	}
	require.NoError(t, json.Unmarshal([]byte(r.Stdout), &d), r.Stdout)
	assert.Len(t, d.Connections, 3)
	assert.Equal(t, 3, d.Info.WSCounter)
}

func TestStatistics(t *testing.T) {
	l := startLive(t, "sip", "msrp")
	r := ctl(t, "-url", l.rpcURL, "stats.get_statistics", "websocket:")
	require.Equal(t, 0, r.Code, r.Stderr)
	var want strings.Builder
	for name, v := range l.srv.Stats().All() {
		fmt.Fprintf(&want, "websocket:%s = %d\n", name, v)
	}
	assert.Equal(t, want.String(), r.Stdout)
	assert.Contains(t, r.Stdout, "websocket:ws_current_connections = 2\n")
	assert.Equal(t, 25, strings.Count(r.Stdout, "\n"))

	r = ctl(t, "-url", l.rpcURL, "stats.get_statistics", "ws_msrp_current_connections", "ws_sip_current_connections")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Equal(t, "websocket:ws_msrp_current_connections = 1\nwebsocket:ws_sip_current_connections = 1\n", r.Stdout)

	r = ctl(t, "-url", l.rpcURL, "system.listMethods")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Contains(t, r.Stdout, "ws.dump\n")
	assert.Contains(t, r.Stdout, "stats.get_statistics\n")
}

func TestVoidCommands(t *testing.T) {
	l := startLive(t, "sip")
	id := fmt.Sprint(l.conns[0].ID())
	nc := l.nets[0]

	r := ctl(t, "-url", l.rpcURL, "ws.ping", id)
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Equal(t, "ok\n", r.Stdout)
	require.NoError(t, nc.SetReadDeadline(time.Now().Add(ioTimeout)))
	f, err := ws.ReadFrame(nc)
	require.NoError(t, err)
	assert.Equal(t, ws.OpPing, f.Header.OpCode)
	assert.Equal(t, "ctl-ping", string(f.Payload))

	r = ctl(t, "-url", l.rpcURL, "ws.close", id, "4000", "Because I say so")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Equal(t, "ok\n", r.Stdout)
	f, err = ws.ReadFrame(nc)
	require.NoError(t, err)
	require.Equal(t, ws.OpClose, f.Header.OpCode)
	code, reason := ws.ParseCloseFrameData(f.Payload)
	assert.Equal(t, ws.StatusCode(4000), code)
	assert.Equal(t, "Because I say so", reason)

	r = ctl(t, "-url", l.rpcURL, "ws.disable")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.Equal(t, "ok\n", r.Stdout)
	assert.False(t, l.srv.Enabled())
	r = ctl(t, "-url", l.rpcURL, "ws.enable")
	require.Equal(t, 0, r.Code, r.Stderr)
	assert.True(t, l.srv.Enabled())
}

func TestRPCErrors(t *testing.T) {
	l := startLive(t, "sip")
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"ws.ping", "99999"}, "error: 500 - Unknown connection ID\n"},
		{[]string{"ws.close", "99999"}, "error: 500 - Unknown connection ID\n"},
		{[]string{"ws.dump", "bogus"}, "error: 400 - Bad display order parameter\n"},
		{[]string{"ws.nope"}, "error: -32601 - Method not found\n"},
		{[]string{"ws.ping"}, "error: 500 - Invalid Parameters (missing connection id)\n"},
		{[]string{"-json", "ws.ping", "99999"}, "error: 500 - Unknown connection ID\n"},
	} {
		r := ctl(t, append([]string{"-url", l.rpcURL}, tc.args...)...)
		assert.Equal(t, 1, r.Code, "%v", tc.args)
		assert.Equal(t, tc.stderr, r.Stderr, "%v", tc.args)
		assert.Empty(t, r.Stdout, "%v", tc.args)
	}
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	url := "http://" + ln.Addr().String() + "/RPC"
	require.NoError(t, ln.Close())
	r := ctl(t, "-url", url, "ws.dump")
	assert.Equal(t, 1, r.Code)
	assert.True(t, strings.HasPrefix(r.Stderr, "error: cannot reach "+url+": "), r.Stderr)
	assert.Contains(t, r.Stderr, "refused")
	assert.Empty(t, r.Stdout)

	// A server that never answers: -timeout bounds the wait.
	block := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-block:
		}
	}))
	t.Cleanup(hang.Close)
	t.Cleanup(func() { close(block) })
	start := time.Now()
	r = ctl(t, "-url", hang.URL, "-timeout", "300ms", "ws.dump")
	assert.Equal(t, 1, r.Code)
	assert.Equal(t, "error: no answer from "+hang.URL+" within 300ms\n", r.Stderr)
	assert.Less(t, time.Since(start), ioTimeout)

	// Something that is not a JSON-RPC server.
	notRPC := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(notRPC.Close)
	r = ctl(t, "-url", notRPC.URL, "ws.dump")
	assert.Equal(t, 1, r.Code)
	assert.Equal(t, "error: "+notRPC.URL+" answered HTTP 404 Not Found\n", r.Stderr)
}

func TestUsage(t *testing.T) {
	r := ctl(t)
	assert.Equal(t, 2, r.Code)
	assert.Contains(t, r.Stderr, "missing METHOD")
	assert.Contains(t, r.Stderr, "Usage: sipwsctl")
	r = ctl(t, "-bogus", "ws.dump")
	assert.Equal(t, 2, r.Code)
	r = ctl(t, "-timeout", "0s", "ws.dump")
	assert.Equal(t, 2, r.Code)
	r = ctl(t, "-h")
	assert.Equal(t, 0, r.Code)
	assert.Contains(t, r.Stderr, "Usage: sipwsctl")
}

func TestParam(t *testing.T) {
	for in, want := range map[string]any{
		"12":        json.Number("12"),
		"-1":        json.Number("-1"),
		"1.5":       json.Number("1.5"),
		"1e3":       json.Number("1e3"),
		"007":       "007",
		"127.0.0.1": "127.0.0.1",
		"used_desc": "used_desc",
		"s:404":     "404",
		"":          "",
		" 1":        " 1",
	} {
		assert.Equal(t, want, param(in), "%q", in)
	}
}

// TestPrintResult covers the formats that the live tests do not reach,
// Kamailio's own ws.dump among them.
func TestPrintResult(t *testing.T) {
	for _, tc := range []struct {
		method, res, want string
	}{
		{"ws.ping", `{}`, "ok\n"},
		{"ws.ping", `null`, "ok\n"},
		{"stats.get_statistics", `[]`, ""},
		{"x.y", `"text"`, "text\n"},
		{"x.y", `{"a":1}`, "{\n  \"a\": 1\n}\n"},
		{"ws.dump", `{"connections":["91: ws:127.0.0.1:49022 -> ws:127.0.0.1:28080 (state: OPEN,  last used 0s ago, sub-protocol: sip)"],"info":{"wscounter":1,"truncated":"no"}}`,
			"91: ws:127.0.0.1:49022 -> ws:127.0.0.1:28080 (state: OPEN,  last used 0s ago, sub-protocol: sip)\n1 listed\n"},
		{"ws.dump", `{"connections":[],"info":{"wscounter":0,"total":7,"truncated":true}}`, "0 listed of 7 (truncated)\n"},
		{"ws.dump", `{"connections":[{"id":4,"src":"wss:[::1]:5","dst":"wss:[::1]:443","state":"CLOSING","awaiting_pong":true,"last_used_s":61,"subprotocol":"msrp","secure":true,"rtt_ms":1.5}],"info":{"wscounter":1,"total":1,"truncated":false}}`,
			"ID  SRC          DST            SUBPROTO  STATE    LAST USED  AWAITING PONG  RTT\n" +
				"4   wss:[::1]:5  wss:[::1]:443  msrp      CLOSING  61s ago    yes            1.5ms\n" +
				"1 listed of 1\n"},
	} {
		var b bytes.Buffer
		printResult(&b, tc.method, json.RawMessage(tc.res))
		assert.Equal(t, tc.want, b.String(), "%s %s", tc.method, tc.res)
	}
}

// TestDefaultURLIsTheExamplesAdmin checks that the default -url is where
// the examples serve the RPC: the address their -admin help, the READMEs
// and SECURITY.md give, and the path they mount the handler at.
func TestDefaultURLIsTheExamplesAdmin(t *testing.T) {
	u, err := neturl.Parse(defaultURL)
	require.NoError(t, err)
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join("..", "..", filepath.FromSlash(name)))
		require.NoError(t, err)
		return string(b)
	}
	for _, name := range []string{"examples/echo/main.go", "examples/webphone/main.go"} {
		src := read(name)
		assert.Contains(t, src, `mux.Handle("`+u.Path+`"`, "%s mounts the RPC at %s", name, u.Path)
		assert.Contains(t, src, "e.g. "+u.Host+", where sipwsctl looks by default", "%s's -admin help gives %s", name, u.Host)
	}
	for _, name := range []string{"README.md", "SECURITY.md", "examples/webphone/README.md"} {
		assert.Contains(t, read(name), "-admin "+u.Host, "%s runs the admin listener at %s", name, u.Host)
	}
}
