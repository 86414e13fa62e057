package sipws_test

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The RPC tests drive NewRPCHandler over real HTTP against a server with
// real WebSocket clients (rawclient_test.go) connected.

// rpcClock is a manual sipws.Clock: time moves only when a test advances it,
// and its tickers never tick, so keepalive never runs.
type rpcClock struct {
	mu  sync.Mutex
	now time.Time
}

func newRPCClock() *rpcClock {
	return &rpcClock{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *rpcClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *rpcClock) NewTicker(time.Duration) sipws.Ticker { return rpcTicker{} }

func (c *rpcClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// rpcTicker never ticks: receiving from its nil channel blocks forever.
type rpcTicker struct{}

func (rpcTicker) C() <-chan time.Time { return nil }
func (rpcTicker) Stop()               {}

// rpcEnv is a sipws server with its RPC handler on a second loopback server.
type rpcEnv struct {
	*testServer
	URL string
}

func rpcStart(t *testing.T, cfg sipws.Config) *rpcEnv {
	t.Helper()
	return rpcStartOpts(t, cfg, nil)
}

// rpcStartOpts is rpcStart with RPC options.
func rpcStartOpts(t *testing.T, cfg sipws.Config, opts *sipws.RPCOptions) *rpcEnv {
	t.Helper()
	ts := startServer(t, cfg)
	hs := httptest.NewServer(sipws.NewRPCHandler(ts.Server, opts))
	t.Cleanup(hs.Close)
	return &rpcEnv{testServer: ts, URL: hs.URL + "/RPC"}
}

// rpcErrObj is a JSON-RPC error object.
type rpcErrObj struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    string `json:"data,omitempty"`
}

// rpcResp is a JSON-RPC response, decoded strictly.
type rpcResp struct {
	JSONRPC string          `json:"jsonrpc"`
	Result  json.RawMessage `json:"result"`
	Error   *rpcErrObj      `json:"error"`
	ID      json.RawMessage `json:"id"`
}

// rpcHTTP is a raw HTTP exchange with the handler.
type rpcHTTP struct {
	Status int
	Header http.Header
	Body   []byte
}

var rpcClient = &http.Client{Timeout: ioTimeout}

// rpcDo sends an HTTP request with the given method, body and header
// fields (name, value, …; "Host" sets the request's Host).
func rpcDo(t *testing.T, method, url, body string, hdr ...string) rpcHTTP {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := rpcClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	if resp.StatusCode != http.StatusNoContent && method != http.MethodHead {
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		assert.Equal(t, strconv.Itoa(len(b)), resp.Header.Get("Content-Length"))
		assert.True(t, json.Valid(b), "response is not JSON: %q", b)
	}
	return rpcHTTP{resp.StatusCode, resp.Header, b}
}

// rpcPost posts body and decodes a single response.
func rpcPost(t *testing.T, url, body string) rpcResp {
	t.Helper()
	h := rpcDo(t, http.MethodPost, url, body)
	require.Equal(t, http.StatusOK, h.Status, "body %s", h.Body)
	return rpcDecode(t, h.Body)
}

// rpcDecode decodes one response object and checks its shape.
func rpcDecode(t *testing.T, b []byte) rpcResp {
	t.Helper()
	var keys map[string]json.RawMessage
	require.NoError(t, json.Unmarshal(b, &keys), "%s", b)
	var r rpcResp
	require.NoError(t, json.Unmarshal(b, &r))
	assert.Equal(t, "2.0", r.JSONRPC)
	_, hasID := keys["id"]
	assert.True(t, hasID, "a response always has an id: %s", b)
	_, hasResult := keys["result"]
	_, hasError := keys["error"]
	assert.True(t, hasResult != hasError, "exactly one of result and error: %s", b)
	return r
}

// rpcCall calls method with params (nil: none) and id 7; it returns the
// result or the error.
func rpcCall(t *testing.T, url, method string, params any) (json.RawMessage, *rpcErrObj) {
	t.Helper()
	req := map[string]any{"jsonrpc": "2.0", "method": method, "id": 7}
	if params != nil {
		req["params"] = params
	}
	b, err := json.Marshal(req)
	require.NoError(t, err)
	r := rpcPost(t, url, string(b))
	assert.JSONEq(t, "7", string(r.ID))
	return r.Result, r.Error
}

// rpcOK calls method and fails the test on an error.
func rpcOK(t *testing.T, url, method string, params any) json.RawMessage {
	t.Helper()
	res, e := rpcCall(t, url, method, params)
	require.Nil(t, e, "%s %v: unexpected error", method, params)
	return res
}

// rpcExpectErr calls method and checks the error code and message.
func rpcExpectErr(t *testing.T, url, method string, params any, code int, msg string) *rpcErrObj {
	t.Helper()
	res, e := rpcCall(t, url, method, params)
	require.NotNil(t, e, "%s %v: expected an error, got %s", method, params, res)
	assert.Equal(t, code, e.Code, "%s %v: %+v", method, params, e)
	assert.Equal(t, msg, e.Message, "%s %v", method, params)
	return e
}

// rpcDumpConn and rpcDump mirror the ws.dump result.
type rpcDumpConn struct {
	ID           uint64  `json:"id"`
	Src          string  `json:"src"`
	Dst          string  `json:"dst"`
	State        string  `json:"state"`
	AwaitingPong bool    `json:"awaiting_pong"`
	LastUsedS    int64   `json:"last_used_s"`
	Subprotocol  string  `json:"subprotocol"`
	Secure       bool    `json:"secure"`
	HTTP2        bool    `json:"http2"`
	RTTms        float64 `json:"rtt_ms"`
}

type rpcDump struct {
	Connections []rpcDumpConn `json:"connections"`
	Info        struct {
		WSCounter int  `json:"wscounter"`
		Total     int  `json:"total"`
		Truncated bool `json:"truncated"`
	} `json:"info"`
}

func rpcDumpCall(t *testing.T, url string, params any) rpcDump {
	t.Helper()
	res := rpcOK(t, url, "ws.dump", params)
	var d rpcDump
	dec := json.NewDecoder(bytes.NewReader(res))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&d), "%s", res)
	require.NotNil(t, d.Connections, "connections is an array, never null: %s", res)
	assert.Equal(t, len(d.Connections), d.Info.WSCounter, "wscounter is the number listed")
	return d
}

func rpcIDs(d rpcDump) []uint64 {
	ids := make([]uint64, len(d.Connections))
	for i, c := range d.Connections {
		ids[i] = c.ID
	}
	return ids
}

// rpcOpen opens a connection and waits until the server has it.
func rpcOpen(t *testing.T, ts *testServer, proto string) (*rawClient, *sipws.Conn) {
	t.Helper()
	c := dialWS(t, ts.Addr, proto)
	return c, ts.nextOpened(t)
}

func TestRPCDumpFormat(t *testing.T) {
	env := rpcStart(t, sipws.Config{})
	sipC, sipConn := rpcOpen(t, env.testServer, "sip")
	_, msrpConn := rpcOpen(t, env.testServer, "msrp")

	// The exact keys of the result, not only the ones the test knows.
	res := rpcOK(t, env.URL, "ws.dump", nil)
	var raw struct {
		Connections []map[string]json.RawMessage `json:"connections"`
		Info        map[string]json.RawMessage   `json:"info"`
	}
	require.NoError(t, json.Unmarshal(res, &raw))
	require.Len(t, raw.Connections, 2)
	for _, c := range raw.Connections {
		assert.ElementsMatch(t, []string{"id", "src", "dst", "state", "awaiting_pong", "last_used_s", "subprotocol", "secure", "http2", "rtt_ms"}, slices.Collect(maps.Keys(c)))
	}
	assert.ElementsMatch(t, []string{"wscounter", "total", "truncated"}, slices.Collect(maps.Keys(raw.Info)))

	d := rpcDumpCall(t, env.URL, nil)
	require.Len(t, d.Connections, 2)
	assert.Equal(t, 2, d.Info.Total)
	assert.False(t, d.Info.Truncated)
	want := []rpcDumpConn{
		{ID: uint64(sipConn.ID()), Src: "ws:" + sipC.conn.LocalAddr().String(), Dst: "ws:" + env.Addr, State: "OPEN", Subprotocol: "sip"},
		{ID: uint64(msrpConn.ID()), Src: "ws:" + msrpConn.RemoteAddr().String(), Dst: "ws:" + env.Addr, State: "OPEN", Subprotocol: "msrp"},
	}
	for i := range want {
		got := d.Connections[i]
		assert.LessOrEqual(t, got.LastUsedS, int64(5))
		got.LastUsedS = 0
		assert.Equal(t, want[i], got)
	}
}

func TestRPCDumpSecureAndIPv6(t *testing.T) {
	env := rpcStart(t, sipws.Config{})

	// wss: the same server behind a TLS listener.
	tlsHS := httptest.NewTLSServer(env.Server)
	t.Cleanup(tlsHS.Close)
	addr := strings.TrimPrefix(tlsHS.URL, "https://")
	pool := x509.NewCertPool()
	pool.AddCert(tlsHS.Certificate())
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", addr, &tls.Config{RootCAs: pool})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tc.Close() })
	require.NoError(t, tc.SetDeadline(time.Now().Add(ioTimeout)))
	_, err = io.WriteString(tc, handshakeRequest(addr, "sip"))
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(tc), nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	secure := env.nextOpened(t)

	// IPv6: the same server on [::1].
	var v6 *sipws.Conn
	if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
		hs6 := httptest.NewUnstartedServer(env.Server)
		hs6.Listener = l
		hs6.Start()
		t.Cleanup(hs6.Close)
		dialWS(t, l.Addr().String(), "msrp")
		v6 = env.nextOpened(t)
	} else {
		t.Logf("no IPv6 loopback (%v): IPv6 part skipped", err)
	}

	d := rpcDumpCall(t, env.URL, nil)
	byID := map[uint64]rpcDumpConn{}
	for _, c := range d.Connections {
		byID[c.ID] = c
	}
	s := byID[uint64(secure.ID())]
	assert.True(t, s.Secure)
	assert.Equal(t, "wss:"+tc.LocalAddr().String(), s.Src)
	assert.Equal(t, "wss:"+addr, s.Dst)
	if v6 != nil {
		c := byID[uint64(v6.ID())]
		assert.False(t, c.Secure)
		assert.True(t, strings.HasPrefix(c.Src, "ws:[::1]:"), c.Src)
		assert.True(t, strings.HasPrefix(c.Dst, "ws:[::1]:"), c.Dst)
		for _, ip := range []string{"::1", "[::1]"} {
			f := rpcDumpCall(t, env.URL, map[string]any{"remote_ip": ip})
			assert.Equal(t, []uint64{uint64(v6.ID())}, rpcIDs(f), ip)
		}
		f := rpcDumpCall(t, env.URL, map[string]any{"remote_ip": "127.0.0.1"})
		assert.Equal(t, []uint64{uint64(secure.ID())}, rpcIDs(f))
	}
}

// TestRPCDumpOrder checks Kamailio's orders with a manual clock:
// used_desc lists the least recently used first, used_asc the most recently
// used first.
func TestRPCDumpOrder(t *testing.T) {
	clock := newRPCClock()
	env := rpcStart(t, sipws.WithClock(sipws.Config{}, clock))
	a, ca := rpcOpen(t, env.testServer, "sip")
	_, cb := rpcOpen(t, env.testServer, "sip")
	c, cc := rpcOpen(t, env.testServer, "msrp")
	require.True(t, ca.ID() < cb.ID() && cb.ID() < cc.ID())

	clock.Advance(10 * time.Second)
	c.sendText("from c")
	env.nextMsg(t)
	clock.Advance(10 * time.Second)
	a.sendText("from a")
	env.nextMsg(t)
	clock.Advance(10 * time.Second)
	// Now: a used 10 s ago, c 20 s ago, b (never) 30 s ago.

	idA, idB, idC := uint64(ca.ID()), uint64(cb.ID()), uint64(cc.ID())
	ages := map[uint64]int64{idA: 10, idB: 30, idC: 20}
	for _, tc := range []struct {
		params any
		want   []uint64
		trunc  bool
	}{
		{nil, []uint64{idA, idB, idC}, false},
		{[]any{"id_hash"}, []uint64{idA, idB, idC}, false},
		{[]any{"used_desc"}, []uint64{idB, idC, idA}, false},
		{[]any{"used_asc"}, []uint64{idA, idC, idB}, false},
		{[]any{"USED_DESC"}, []uint64{idB, idC, idA}, false}, // Kamailio ignores case
		{map[string]any{"order": "used_asc"}, []uint64{idA, idC, idB}, false},
		{[]any{"used_desc", 2}, []uint64{idB, idC}, true},
		{[]any{"used_desc", 2, 1}, []uint64{idC, idA}, false},
		{[]any{"used_asc", 1, 1}, []uint64{idC}, true},
		{map[string]any{"order": "used_desc", "offset": 2}, []uint64{idA}, false},
		{[]any{nil, "2"}, []uint64{idA, idB}, true}, // null order is the default; limit as a string
	} {
		d := rpcDumpCall(t, env.URL, tc.params)
		assert.Equal(t, tc.want, rpcIDs(d), "%v", tc.params)
		assert.Equal(t, tc.trunc, d.Info.Truncated, "%v", tc.params)
		assert.Equal(t, 3, d.Info.Total)
		for _, c := range d.Connections {
			assert.Equal(t, ages[c.ID], c.LastUsedS, "last_used_s of %d", c.ID)
		}
	}

	rpcExpectErr(t, env.URL, "ws.dump", []any{"bogus"}, 400, "Bad display order parameter")
	rpcExpectErr(t, env.URL, "ws.dump", []any{1}, 400, "Bad display order parameter")
	rpcExpectErr(t, env.URL, "ws.dump", []any{true}, 400, "Bad display order parameter")
	rpcExpectErr(t, env.URL, "ws.dump", map[string]any{"order": "used"}, 400, "Bad display order parameter")
}

func TestRPCDumpPaging(t *testing.T) {
	env := rpcStart(t, sipws.Config{})
	const n = 120
	var all, msrp []uint64
	for i := range n {
		proto := "sip"
		if i%3 == 0 {
			proto = "msrp"
		}
		_, c := rpcOpen(t, env.testServer, proto)
		all = append(all, uint64(c.ID()))
		if proto == "msrp" {
			msrp = append(msrp, uint64(c.ID()))
		}
	}
	slices.Sort(all)
	slices.Sort(msrp)

	// Default: the first 50 by ID, as Kamailio.
	d := rpcDumpCall(t, env.URL, nil)
	assert.Equal(t, all[:50], rpcIDs(d))
	assert.True(t, d.Info.Truncated)
	assert.Equal(t, n, d.Info.Total)
	assert.Equal(t, all[:50], rpcIDs(rpcDumpCall(t, env.URL, []any{"id_hash", 0})), "limit 0 is the default")

	// Pages of 50 cover every ID exactly once.
	var seen []uint64
	for i, off := range []int{0, 50, 100} {
		d := rpcDumpCall(t, env.URL, map[string]any{"limit": 50, "offset": off})
		assert.Equal(t, []int{50, 50, 20}[i], d.Info.WSCounter)
		assert.Equal(t, i < 2, d.Info.Truncated, "page %d", i)
		assert.Equal(t, n, d.Info.Total)
		seen = append(seen, rpcIDs(d)...)
	}
	assert.Equal(t, all, seen)

	// Any order, any page size: each ID exactly once.
	for _, order := range []string{"id_hash", "used_desc", "used_asc"} {
		count := map[uint64]int{}
		for off := 0; off < n; off += 7 {
			d := rpcDumpCall(t, env.URL, []any{order, 7, off})
			assert.Equal(t, off+7 < n, d.Info.Truncated)
			for _, id := range rpcIDs(d) {
				count[id]++
			}
		}
		assert.Len(t, count, n, order)
		for id, k := range count {
			assert.Equal(t, 1, k, "%s: id %d listed %d times", order, id, k)
		}
	}

	// All at once, past the end, filters.
	d = rpcDumpCall(t, env.URL, []any{"id_hash", -1})
	assert.Equal(t, all, rpcIDs(d))
	assert.False(t, d.Info.Truncated)
	d = rpcDumpCall(t, env.URL, []any{"id_hash", 10, 500})
	assert.Empty(t, d.Connections)
	assert.Equal(t, n, d.Info.Total)
	assert.False(t, d.Info.Truncated)

	d = rpcDumpCall(t, env.URL, map[string]any{"subprotocol": "msrp", "limit": -1})
	assert.Equal(t, msrp, rpcIDs(d))
	assert.Equal(t, len(msrp), d.Info.Total)
	for _, c := range d.Connections {
		assert.Equal(t, "msrp", c.Subprotocol)
	}
	d = rpcDumpCall(t, env.URL, []any{"id_hash", -1, 0, "SIP"})
	assert.Equal(t, n-len(msrp), d.Info.Total)
	d = rpcDumpCall(t, env.URL, []any{"id_hash", 5, 0, "", "127.0.0.1"})
	assert.Equal(t, n, d.Info.Total)
	assert.Len(t, d.Connections, 5)
	d = rpcDumpCall(t, env.URL, map[string]any{"remote_ip": "127.0.0.2"})
	assert.Equal(t, 0, d.Info.Total)

	for _, p := range []any{
		map[string]any{"subprotocol": "xmpp"},
		map[string]any{"remote_ip": "localhost"},
		map[string]any{"limit": "ten"},
		map[string]any{"limit": 1.5},
		map[string]any{"offset": -1},
		map[string]any{"lmit": 5},
		[]any{"id_hash", 1, 0, "sip", "127.0.0.1", "extra"},
		"id_hash",
		42,
	} {
		rpcExpectErr(t, env.URL, "ws.dump", p, 500, "Invalid Parameters")
	}
}

func TestRPCPingPong(t *testing.T) {
	clock := newRPCClock()
	env := rpcStart(t, sipws.WithClock(sipws.Config{PingData: []byte("rpc-ping")}, clock))
	c, conn := rpcOpen(t, env.testServer, "sip")
	id := uint64(conn.ID())

	res := rpcOK(t, env.URL, "ws.ping", []any{id})
	assert.JSONEq(t, `{}`, string(res), "a void command returns an empty object, as Kamailio's jsonrpcs")
	f := c.mustReadFrame()
	assert.Equal(t, byte(0x9), f.Op)
	assert.Equal(t, "rpc-ping", string(f.Payload))
	assert.True(t, f.Fin)
	assert.False(t, f.Masked)

	d := rpcDumpCall(t, env.URL, nil)
	require.Len(t, d.Connections, 1)
	assert.True(t, d.Connections[0].AwaitingPong)
	assert.Zero(t, d.Connections[0].RTTms)

	clock.Advance(250 * time.Millisecond)
	c.writeFrame(true, 0, 0xA, f.Payload, true)
	require.Eventually(t, func() bool {
		d := rpcDumpCall(t, env.URL, nil)
		return len(d.Connections) == 1 && !d.Connections[0].AwaitingPong
	}, ioTimeout, 10*time.Millisecond)
	d = rpcDumpCall(t, env.URL, nil)
	assert.Equal(t, 250.0, d.Connections[0].RTTms)
	assert.Zero(t, d.Connections[0].LastUsedS)

	// The ID as a string (kamcmd-like tools), named, and ws.pong.
	rpcOK(t, env.URL, "ws.ping", []any{strconv.FormatUint(id, 10)})
	assert.Equal(t, byte(0x9), c.mustReadFrame().Op)
	rpcOK(t, env.URL, "ws.ping", map[string]any{"id": id})
	assert.Equal(t, byte(0x9), c.mustReadFrame().Op)
	res = rpcOK(t, env.URL, "ws.pong", []any{id})
	assert.JSONEq(t, `{}`, string(res))
	f = c.mustReadFrame()
	assert.Equal(t, byte(0xA), f.Op)
	assert.Equal(t, "rpc-ping", string(f.Payload))

	for _, m := range []string{"ws.ping", "ws.pong"} {
		rpcExpectErr(t, env.URL, m, []any{99999}, 500, "Unknown connection ID")
		rpcExpectErr(t, env.URL, m, []any{0}, 500, "Unknown connection ID")
		rpcExpectErr(t, env.URL, m, []any{"99999"}, 500, "Unknown connection ID")
		rpcExpectErr(t, env.URL, m, nil, 500, "Invalid Parameters")
		rpcExpectErr(t, env.URL, m, []any{}, 500, "Invalid Parameters")
		rpcExpectErr(t, env.URL, m, []any{"abc"}, 500, "Invalid Parameters")
		rpcExpectErr(t, env.URL, m, []any{-1}, 500, "Invalid Parameters")
		rpcExpectErr(t, env.URL, m, []any{1.5}, 500, "Invalid Parameters")
		rpcExpectErr(t, env.URL, m, []any{id, id}, 500, "Invalid Parameters")
		rpcExpectErr(t, env.URL, m, map[string]any{"conn": id}, 500, "Invalid Parameters")
	}
}

func TestRPCClose(t *testing.T) {
	env := rpcStart(t, sipws.Config{CloseTimeout: ioTimeout})

	// Code and reason reach the client; OnClosed fires with them.
	c, conn := rpcOpen(t, env.testServer, "sip")
	id := uint64(conn.ID())
	res := rpcOK(t, env.URL, "ws.close", []any{id, 4000, "Because I say so"})
	assert.JSONEq(t, `{}`, string(res))
	f := c.mustReadFrame()
	require.Equal(t, byte(0x8), f.Op)
	code, reason := f.closeCode()
	assert.Equal(t, uint16(4000), code)
	assert.Equal(t, "Because I say so", reason)

	// While the close handshake is pending the connection is CLOSING and
	// takes no second close and no ping.
	d := rpcDumpCall(t, env.URL, nil)
	require.Len(t, d.Connections, 1)
	assert.Equal(t, "CLOSING", d.Connections[0].State)
	rpcExpectErr(t, env.URL, "ws.close", []any{id}, 500, "Error closing connection")
	rpcExpectErr(t, env.URL, "ws.ping", []any{id}, 500, "Error sending frame")

	c.sendClose(4000, "Because I say so")
	ev := env.nextClosed(t)
	assert.Equal(t, conn.ID(), ev.ID)
	assert.Equal(t, sipws.CloseCode(4000), ev.Code)
	assert.Equal(t, "Because I say so", ev.Reason)
	assert.Equal(t, sipws.CauseHost, ev.Cause)
	c.expectEOF(ioTimeout)
	assert.Empty(t, rpcDumpCall(t, env.URL, nil).Connections)
	rpcExpectErr(t, env.URL, "ws.close", []any{id}, 500, "Unknown connection ID")

	// Default: 1000 "Normal closure"; named params; code as a string.
	for _, tc := range []struct {
		params func(id uint64) any
		code   uint16
		reason string
	}{
		{func(id uint64) any { return []any{id} }, 1000, "Normal closure"},
		{func(id uint64) any { return map[string]any{"id": id, "code": 4001, "reason": "named"} }, 4001, "named"},
		{func(id uint64) any { return []any{strconv.FormatUint(id, 10), "1001", "going"} }, 1001, "going"},
		{func(id uint64) any { return []any{id, 0, "bye"} }, 1000, "bye"},
		{func(id uint64) any { return []any{id, 3000} }, 3000, ""},
	} {
		c, conn := rpcOpen(t, env.testServer, "msrp")
		id := uint64(conn.ID())
		rpcOK(t, env.URL, "ws.close", tc.params(id))
		f := c.mustReadFrame()
		require.Equal(t, byte(0x8), f.Op)
		code, reason := f.closeCode()
		assert.Equal(t, tc.code, code)
		assert.Equal(t, tc.reason, reason)
		c.sendClose(code, reason)
		ev := env.nextClosed(t)
		assert.Equal(t, conn.ID(), ev.ID)
		assert.Equal(t, sipws.CloseCode(tc.code), ev.Code)
		assert.Equal(t, sipws.CauseHost, ev.Cause)
	}

	// Invalid codes and reasons send nothing: the next frame is a ping.
	c, conn = rpcOpen(t, env.testServer, "sip")
	id = uint64(conn.ID())
	for _, code := range []any{1005, 1006, 1015, 999, 2000, 5000, 70000, -1} {
		rpcExpectErr(t, env.URL, "ws.close", []any{id, code}, 500, "Invalid close code")
	}
	rpcExpectErr(t, env.URL, "ws.close", []any{id, 1000, strings.Repeat("x", 124)}, 500, "Invalid close reason")
	rpcExpectErr(t, env.URL, "ws.close", []any{id, "abc"}, 500, "Invalid Parameters")
	rpcExpectErr(t, env.URL, "ws.close", []any{id, 1000, true}, 500, "Invalid Parameters")
	rpcExpectErr(t, env.URL, "ws.close", []any{id, 1000, "a", "b"}, 500, "Invalid Parameters")
	rpcExpectErr(t, env.URL, "ws.close", nil, 500, "Invalid Parameters")
	rpcExpectErr(t, env.URL, "ws.close", map[string]any{"code": 1000}, 500, "Invalid Parameters")
	rpcExpectErr(t, env.URL, "ws.close", []any{99999}, 500, "Unknown connection ID")
	rpcOK(t, env.URL, "ws.ping", []any{id})
	assert.Equal(t, byte(0x9), c.mustReadFrame().Op, "nothing was sent before the ping")
	// A reason of exactly 123 bytes fits.
	rpcOK(t, env.URL, "ws.close", []any{id, 1000, strings.Repeat("x", 123)})
	f = c.mustReadFrame()
	_, reason = f.closeCode()
	assert.Len(t, reason, 123)
}

func TestRPCDisableEnable(t *testing.T) {
	env := rpcStart(t, sipws.Config{})
	c, _ := rpcOpen(t, env.testServer, "sip")

	res := rpcOK(t, env.URL, "ws.disable", nil)
	assert.JSONEq(t, `{}`, string(res))
	assert.False(t, env.Enabled())
	_, resp := rawDial(t, env.Addr, handshakeRequest(env.Addr, "sip"))
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	// Open connections keep working.
	c.sendText("still here")
	assert.Equal(t, "still here", string(env.nextMsg(t).Msg.Data))
	rpcOK(t, env.URL, "ws.disable", []any{}) // twice is fine

	res = rpcOK(t, env.URL, "ws.enable", nil)
	assert.JSONEq(t, `{}`, string(res))
	assert.True(t, env.Enabled())
	rpcOpen(t, env.testServer, "sip")

	rpcExpectErr(t, env.URL, "ws.disable", []any{1}, 500, "Invalid Parameters")
	rpcExpectErr(t, env.URL, "ws.enable", map[string]any{"now": true}, 500, "Invalid Parameters")
	assert.True(t, env.Enabled())
}

func TestRPCListMethods(t *testing.T) {
	env := rpcStart(t, sipws.Config{})
	res := rpcOK(t, env.URL, "system.listMethods", nil)
	assert.JSONEq(t, `["stats.get_statistics","system.listMethods","ws.close","ws.disable","ws.dump","ws.enable","ws.ping","ws.pong"]`, string(res))
}

// rpcStatLines formats Stats the way stats.get_statistics does.
func rpcStatLines(st sipws.Stats, names ...string) []string {
	lines := []string{}
	for name, v := range st.All() {
		if len(names) == 0 || slices.Contains(names, name) {
			lines = append(lines, fmt.Sprintf("websocket:%s = %d", name, v))
		}
	}
	return lines
}

func rpcStats(t *testing.T, url string, params any) []string {
	t.Helper()
	res := rpcOK(t, url, "stats.get_statistics", params)
	var lines []string
	require.NoError(t, json.Unmarshal(res, &lines), "%s", res)
	require.NotNil(t, lines, "an array, never null")
	return lines
}

// TestRPCStatistics churns connections in every way they can end and
// checks that the statistics the RPC reports are the server's and agree
// with the registry.
func TestRPCStatistics(t *testing.T) {
	env := rpcStart(t, sipws.Config{CloseTimeout: ioTimeout})
	type open struct {
		c    *rawClient
		conn *sipws.Conn
	}
	var conns []open
	for i := range 12 {
		proto := []string{"sip", "msrp"}[i%2]
		c, conn := rpcOpen(t, env.testServer, proto)
		conns = append(conns, open{c, conn})
		c.sendText(fmt.Sprintf("hello %d", i))
		env.nextMsg(t)
	}
	_, resp := rawDial(t, env.Addr, handshakeRequest(env.Addr, "xmpp")) // a failed handshake
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode)

	// Ends: peer close (0, 1), host close over RPC (2, 3), TCP lost (4, 5),
	// protocol error (6).
	for _, o := range conns[0:2] {
		o.c.sendClose(1000, "bye")
	}
	for _, o := range conns[2:4] {
		rpcOK(t, env.URL, "ws.close", []any{uint64(o.conn.ID())})
		f := o.c.mustReadFrame()
		require.Equal(t, byte(0x8), f.Op)
		o.c.sendClose(1000, "")
	}
	for _, o := range conns[4:6] {
		_ = o.c.conn.Close()
	}
	conns[6].c.writeFrame(true, 0, 0x1, []byte("unmasked"), false)
	for range 7 {
		env.nextClosed(t)
	}
	for _, o := range conns[7:] {
		rpcOK(t, env.URL, "ws.ping", []any{uint64(o.conn.ID())})
		assert.Equal(t, byte(0x9), o.c.mustReadFrame().Op)
	}

	// A frame is counted once its write returns, which may be just after
	// the client has read it: wait for the 10 frames sent (2 close echoes,
	// 2 closes over RPC, one 1002, 5 pings), then for a quiet moment.
	require.Eventually(t, func() bool { return env.Stats().TransmittedFrames == 10 }, ioTimeout, time.Millisecond)
	var all []string
	var after sipws.Stats
	require.Eventually(t, func() bool {
		before := env.Stats()
		all = rpcStats(t, env.URL, []any{"all"})
		after = env.Stats()
		return before == after
	}, ioTimeout, 10*time.Millisecond, "the server is quiet")
	assert.Equal(t, rpcStatLines(after), all)
	assert.Len(t, all, 25)
	assert.Equal(t, uint64(env.Registry().Len()), after.CurrentConnections)
	assert.Equal(t, uint64(5), after.CurrentConnections)
	assert.Equal(t, after.SuccessfulHandshakes-after.LocalClosedConnections-after.RemoteClosedConnections, after.CurrentConnections)
	assert.Equal(t, uint64(12), after.SuccessfulHandshakes)
	assert.Equal(t, uint64(1), after.FailedHandshakes)
	assert.Equal(t, uint64(3), after.FailedConnections, "TCP lost twice, one protocol error")
	assert.Equal(t, 5, rpcDumpCall(t, env.URL, nil).Info.Total)
	assert.Contains(t, all, "websocket:ws_current_connections = 5")

	// Every way to ask: group, names with and without the group, several
	// (listed in Stats.All order, once each), none (all), named.
	assert.Equal(t, all, rpcStats(t, env.URL, []any{"websocket:"}))
	assert.Equal(t, all, rpcStats(t, env.URL, nil))
	assert.Equal(t, all, rpcStats(t, env.URL, []any{}))
	assert.Equal(t, all, rpcStats(t, env.URL, map[string]any{"names": "all"}))
	assert.Equal(t, rpcStatLines(after, "ws_current_connections"), rpcStats(t, env.URL, []any{"ws_current_connections"}))
	assert.Equal(t, rpcStatLines(after, "ws_current_connections"), rpcStats(t, env.URL, []any{"websocket:ws_current_connections"}))
	assert.Equal(t, []string{"websocket:ws_current_connections = 5", "websocket:ws_sip_failed_connections = " + strconv.FormatUint(after.SIP.FailedConnections, 10)},
		rpcStats(t, env.URL, []any{"ws_sip_failed_connections", "websocket:ws_current_connections", "ws_current_connections"}))
	assert.Equal(t, rpcStatLines(after, "ws_failed_handshakes", "ws_msrp_received_frames"),
		rpcStats(t, env.URL, map[string]any{"names": []string{"ws_msrp_received_frames", "websocket:ws_failed_handshakes"}}))
	assert.Empty(t, rpcStats(t, env.URL, []any{"ws_nonexistent"}))
	assert.Empty(t, rpcStats(t, env.URL, []any{"core:"}))
	assert.Empty(t, rpcStats(t, env.URL, []any{"core:ws_current_connections"}))
	assert.Empty(t, rpcStats(t, env.URL, []any{"websocket"}))

	assert.Empty(t, rpcStats(t, env.URL, []any{1}), "a number is a name like any other")
	rpcExpectErr(t, env.URL, "stats.get_statistics", []any{true}, 500, "Invalid Parameters")
	rpcExpectErr(t, env.URL, "stats.get_statistics", []any{[]string{"all"}}, 500, "Invalid Parameters")
	rpcExpectErr(t, env.URL, "stats.get_statistics", map[string]any{"name": "all"}, 500, "Invalid Parameters")
}

// TestRPCProtocol checks the JSON-RPC 2.0 layer: ids, notifications,
// batches, malformed requests, HTTP methods and limits.
func TestRPCProtocol(t *testing.T) {
	env := rpcStart(t, sipws.Config{})
	url := env.URL
	expectErr := func(r rpcResp, code int, msg string) {
		t.Helper()
		require.NotNil(t, r.Error, "expected an error")
		assert.Equal(t, code, r.Error.Code)
		assert.Equal(t, msg, r.Error.Message)
	}

	// Parse errors: id null.
	for _, body := range []string{`{"jsonrpc":"2.0","method":`, ``, `   `, `{"a":1}}`, `[1,]`, "\xff", `{"jsonrpc":"2.0","method":"ws.dump","id":1} {}`} {
		r := rpcPost(t, url, body)
		expectErr(r, -32700, "Parse error")
		assert.Equal(t, "null", string(r.ID), "%q", body)
	}

	// Not a request object.
	for _, body := range []string{`1`, `"ws.dump"`, `null`, `true`} {
		r := rpcPost(t, url, body)
		expectErr(r, -32600, "Invalid Request")
		assert.Equal(t, "null", string(r.ID))
	}
	for _, tc := range []struct{ body, id string }{
		{`{"method":"ws.dump","id":3}`, "3"},                          // no jsonrpc
		{`{"jsonrpc":"1.0","method":"ws.dump","id":"x"}`, `"x"`},      // wrong version
		{`{"jsonrpc":2.0,"method":"ws.dump","id":4}`, "4"},            // version not a string
		{`{"jsonrpc":"2.0","method":5,"id":5}`, "5"},                  // method not a string
		{`{"jsonrpc":"2.0","id":6}`, "6"},                             // no method
		{`{"jsonrpc":"2.0","method":"ws.dump","id":{"a":1}}`, "null"}, // bad id
		{`{"jsonrpc":"2.0","method":"ws.dump","id":[1]}`, "null"},
		{`{"jsonrpc":"2.0","method":"ws.dump","id":true}`, "null"},
		{`{"jsonrpc":"2.0","method":1}`, "null"}, // invalid even without an id
	} {
		r := rpcPost(t, url, tc.body)
		expectErr(r, -32600, "Invalid Request")
		assert.Equal(t, tc.id, string(r.ID), tc.body)
	}

	// Unknown method; params of the wrong type.
	r := rpcPost(t, url, `{"jsonrpc":"2.0","method":"ws.nope","id":1}`)
	expectErr(r, -32601, "Method not found")
	r = rpcPost(t, url, `{"jsonrpc":"2.0","method":"ws.dump","params":"id_hash","id":1}`)
	expectErr(r, 500, "Invalid Parameters")

	// Ids come back as they were sent.
	for _, id := range []string{`"abc"`, `"12"`, `12`, `-3`, `1.5`, `12345678901234567890123`, `null`, `""`, `"\u00e9\"<>"`} {
		r := rpcPost(t, url, `{"jsonrpc":"2.0","method":"system.listMethods","id":`+id+`}`)
		require.Nil(t, r.Error)
		assert.JSONEq(t, id, string(r.ID))
	}

	// Notifications run but get no response; keys are matched exactly.
	h := rpcDo(t, http.MethodPost, url, `{"jsonrpc":"2.0","method":"ws.disable"}`)
	assert.Equal(t, http.StatusNoContent, h.Status)
	assert.Empty(t, h.Body)
	assert.False(t, env.Enabled())
	h = rpcDo(t, http.MethodPost, url, `{"jsonrpc":"2.0","method":"ws.enable","ID":1}`)
	assert.Equal(t, http.StatusNoContent, h.Status)
	assert.True(t, env.Enabled())
	h = rpcDo(t, http.MethodPost, url, `{"jsonrpc":"2.0","method":"ws.nope"}`)
	assert.Equal(t, http.StatusNoContent, h.Status, "no response even for an unknown method")

	// Batches: responses in order, notifications left out.
	h = rpcDo(t, http.MethodPost, url, `[
		{"jsonrpc":"2.0","method":"system.listMethods","id":1},
		{"jsonrpc":"2.0","method":"ws.disable"},
		{"jsonrpc":"2.0","method":"stats.get_statistics","params":["ws_current_connections"],"id":"two"},
		1,
		{"jsonrpc":"2.0","method":"ws.ping","params":[424242],"id":3},
		{"jsonrpc":"2.0","method":"ws.nope","id":4},
		{"jsonrpc":"2.0","method":"ws.enable"}
	]`)
	require.Equal(t, http.StatusOK, h.Status)
	var batch []json.RawMessage
	require.NoError(t, json.Unmarshal(h.Body, &batch))
	require.Len(t, batch, 5)
	rs := make([]rpcResp, len(batch))
	for i, b := range batch {
		rs[i] = rpcDecode(t, b)
	}
	assert.Equal(t, "1", string(rs[0].ID))
	assert.Nil(t, rs[0].Error)
	assert.Equal(t, `"two"`, string(rs[1].ID))
	assert.JSONEq(t, `["websocket:ws_current_connections = 0"]`, string(rs[1].Result))
	expectErr(rs[2], -32600, "Invalid Request")
	assert.Equal(t, "null", string(rs[2].ID))
	expectErr(rs[3], 500, "Unknown connection ID")
	assert.Equal(t, "3", string(rs[3].ID))
	expectErr(rs[4], -32601, "Method not found")
	assert.True(t, env.Enabled(), "disable then enable ran in order")

	h = rpcDo(t, http.MethodPost, url, `[{"jsonrpc":"2.0","method":"ws.disable"},{"jsonrpc":"2.0","method":"ws.enable"}]`)
	assert.Equal(t, http.StatusNoContent, h.Status, "a batch of notifications")
	assert.Empty(t, h.Body)
	r = rpcPost(t, url, `[]`)
	expectErr(r, -32600, "Invalid Request")

	// POST only.
	for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodHead, http.MethodOptions} {
		h := rpcDo(t, m, url, "")
		assert.Equal(t, http.StatusMethodNotAllowed, h.Status, m)
		assert.Equal(t, http.MethodPost, h.Header.Get("Allow"), m)
	}

	// Body limit: 1 MiB of padding around a valid request still passes;
	// over 1 MiB is refused whole.
	req := `{"jsonrpc":"2.0","method":"system.listMethods","id":1}`
	ok := req + strings.Repeat(" ", sipws.MaxRPCRequestSize-len(req))
	assert.Nil(t, rpcPost(t, url, ok).Error)
	h = rpcDo(t, http.MethodPost, url, ok+" ")
	assert.Equal(t, http.StatusRequestEntityTooLarge, h.Status)
	expectErr(rpcDecode(t, h.Body), -32600, "Invalid Request")

	// A browser's cross-site request is refused and does nothing.
	h = rpcDo(t, http.MethodPost, url, `{"jsonrpc":"2.0","method":"ws.disable","id":1}`, "Sec-Fetch-Site", "cross-site")
	assert.Equal(t, http.StatusForbidden, h.Status)
	assert.True(t, env.Enabled())
	h = rpcDo(t, http.MethodPost, url, `{"jsonrpc":"2.0","method":"ws.disable","id":1}`, "Origin", "https://evil.example")
	assert.Equal(t, http.StatusForbidden, h.Status)
	assert.True(t, env.Enabled())
}

// rpcBatch posts a batch and decodes its responses, which must be a valid
// JSON array of response objects.
func rpcBatch(t *testing.T, url string, calls ...map[string]any) ([]rpcResp, rpcHTTP) {
	t.Helper()
	b, err := json.Marshal(calls)
	require.NoError(t, err)
	h := rpcDo(t, http.MethodPost, url, string(b))
	require.Equal(t, http.StatusOK, h.Status, "body %s", h.Body)
	var raw []json.RawMessage
	require.NoError(t, json.Unmarshal(h.Body, &raw), "a batch gets an array: %s", h.Body)
	rs := make([]rpcResp, len(raw))
	for i, r := range raw {
		rs[i] = rpcDecode(t, r)
	}
	return rs, h
}

// rpcReq is one request of a batch; id nil makes it a notification.
func rpcReq(method string, params any, id any) map[string]any {
	r := map[string]any{"jsonrpc": "2.0", "method": method}
	if params != nil {
		r["params"] = params
	}
	if id != nil {
		r["id"] = id
	}
	return r
}

// TestRPCBatchLimit checks that a batch longer than RPCOptions.MaxBatch is
// refused whole, with an error that says so, and that none of it runs.
func TestRPCBatchLimit(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts *sipws.RPCOptions
		max  int
	}{
		{"default", nil, 100},
		{"option", &sipws.RPCOptions{MaxBatch: 3}, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := rpcStartOpts(t, sipws.Config{}, tc.opts)
			// max+1 calls, the first of which would disable the server.
			calls := []map[string]any{rpcReq("ws.disable", nil, nil)}
			for i := range tc.max {
				calls = append(calls, rpcReq("system.listMethods", nil, i))
			}
			b, err := json.Marshal(calls)
			require.NoError(t, err)
			h := rpcDo(t, http.MethodPost, env.URL, string(b))
			require.Equal(t, http.StatusOK, h.Status)
			r := rpcDecode(t, h.Body)
			require.NotNil(t, r.Error, "one error for the whole batch: %s", h.Body)
			assert.Equal(t, -32600, r.Error.Code)
			assert.Equal(t, "Invalid Request", r.Error.Message)
			assert.Contains(t, r.Error.Data, fmt.Sprintf("batch of %d calls: at most %d", tc.max+1, tc.max))
			assert.Equal(t, "null", string(r.ID))
			assert.True(t, env.Enabled(), "no call of a refused batch runs")

			// Exactly max calls pass.
			rs, _ := rpcBatch(t, env.URL, calls[:tc.max]...)
			assert.Len(t, rs, tc.max-1)
			assert.False(t, env.Enabled())
		})
	}
}

// TestRPCDumpRowsLimit checks RPCOptions.MaxDumpRows: "all" lists at most
// that many and says it is truncated, a larger explicit limit is an error
// that says so, and paging reaches every connection.
func TestRPCDumpRowsLimit(t *testing.T) {
	env := rpcStartOpts(t, sipws.Config{}, &sipws.RPCOptions{MaxDumpRows: 5})
	const n = 12
	var all []uint64
	for range n {
		_, c := rpcOpen(t, env.testServer, "sip")
		all = append(all, uint64(c.ID()))
	}
	slices.Sort(all)

	d := rpcDumpCall(t, env.URL, []any{"id_hash", -1})
	assert.Equal(t, all[:5], rpcIDs(d), "all: the first 5")
	assert.True(t, d.Info.Truncated)
	assert.Equal(t, n, d.Info.Total)
	d = rpcDumpCall(t, env.URL, nil)
	assert.Len(t, d.Connections, 5, "Kamailio's default of 50 is above the cap too")

	e := rpcExpectErr(t, env.URL, "ws.dump", []any{"id_hash", 6}, 500, "Invalid Parameters")
	assert.Contains(t, e.Data, "limit 6 is over the 5 connections one ws.dump may list")
	rpcExpectErr(t, env.URL, "ws.dump", map[string]any{"limit": "1000000000000"}, 500, "Invalid Parameters")

	var seen []uint64
	for off := 0; off < n; off += 5 {
		d := rpcDumpCall(t, env.URL, map[string]any{"limit": 5, "offset": off})
		seen = append(seen, rpcIDs(d)...)
	}
	assert.Equal(t, all, seen, "pages reach every connection")

	// The default cap: 10,000.
	def := rpcStart(t, sipws.Config{})
	rpcDumpCall(t, def.URL, []any{"id_hash", 10000})
	e = rpcExpectErr(t, def.URL, "ws.dump", []any{"id_hash", 10001}, 500, "Invalid Parameters")
	assert.Contains(t, e.Data, "over the 10000 connections")
}

// TestRPCResponseLimit checks RPCOptions.MaxResponseBytes: a call whose
// response would pass it gets -32000 instead, the calls after it are not
// run, and the body stays valid JSON within the limit plus those errors.
func TestRPCResponseLimit(t *testing.T) {
	const limit = 4096
	env := rpcStartOpts(t, sipws.Config{}, &sipws.RPCOptions{MaxResponseBytes: limit})
	for range 40 { // about 180 bytes a row: 40 rows are past the limit
		rpcOpen(t, env.testServer, "sip")
	}
	tooLarge := func(r rpcResp, ran bool) {
		t.Helper()
		require.NotNil(t, r.Error, "expected an error, got %s", r.Result)
		assert.Equal(t, -32000, r.Error.Code)
		assert.Equal(t, "Response too large", r.Error.Message)
		assert.Contains(t, r.Error.Data, "4096 bytes")
		assert.Contains(t, r.Error.Data, "limit and offset")
		assert.Equal(t, !ran, strings.HasPrefix(r.Error.Data, "not run"), r.Error.Data)
	}

	// One call.
	h := rpcDo(t, http.MethodPost, env.URL, `{"jsonrpc":"2.0","method":"ws.dump","params":["id_hash",-1],"id":"big"}`)
	require.Equal(t, http.StatusOK, h.Status)
	assert.LessOrEqual(t, len(h.Body), limit)
	r := rpcDecode(t, h.Body)
	tooLarge(r, true)
	assert.Equal(t, `"big"`, string(r.ID))
	d := rpcDumpCall(t, env.URL, []any{"id_hash", 5}) // a small page fits
	assert.Len(t, d.Connections, 5)

	// A batch: what fits is answered; from the call that does not fit on,
	// each call gets the error, and none after it runs.
	rs, h := rpcBatch(t, env.URL,
		rpcReq("system.listMethods", nil, 1),
		rpcReq("ws.dump", []any{"id_hash", 3}, 2),
		rpcReq("ws.dump", []any{"id_hash", -1}, 3),
		rpcReq("ws.dump", []any{"id_hash", 1}, 4),
		rpcReq("ws.disable", nil, nil),
		rpcReq("stats.get_statistics", []any{"all"}, 5),
	)
	require.Len(t, rs, 5)
	for i, r := range rs {
		assert.JSONEq(t, strconv.Itoa(i+1), string(r.ID))
	}
	assert.Nil(t, rs[0].Error)
	require.Nil(t, rs[1].Error)
	var page rpcDump
	require.NoError(t, json.Unmarshal(rs[1].Result, &page))
	assert.Len(t, page.Connections, 3)
	tooLarge(rs[2], true)
	tooLarge(rs[3], false)
	tooLarge(rs[4], false)
	assert.True(t, env.Enabled(), "the ws.disable after the limit was not run")
	assert.LessOrEqual(t, len(h.Body), limit+3*300, "the limit, plus the short errors")

	// Many pages that each fit, but not all together.
	var calls []map[string]any
	for i := range 8 {
		calls = append(calls, rpcReq("ws.dump", []any{"id_hash", 5, 5 * i}, i))
	}
	rs, h = rpcBatch(t, env.URL, calls...)
	require.Len(t, rs, 8)
	answered := 0
	for answered < len(rs) && rs[answered].Error == nil {
		answered++
	}
	require.Less(t, answered, len(rs), "8 pages of 5 rows are past 4096 bytes")
	require.Positive(t, answered)
	tooLarge(rs[answered], true)
	for _, r := range rs[answered+1:] {
		tooLarge(r, false)
	}
	assert.LessOrEqual(t, len(h.Body), limit+(len(rs)-answered)*300)
}

// TestRPCDumpBatchSnapshot checks that the ws.dump calls of one batch list
// one snapshot, taken again after a ws.close that worked.
func TestRPCDumpBatchSnapshot(t *testing.T) {
	env := rpcStart(t, sipws.Config{CloseTimeout: ioTimeout})
	var ids []uint64
	for range 6 {
		_, c := rpcOpen(t, env.testServer, "sip")
		ids = append(ids, uint64(c.ID()))
	}
	slices.Sort(ids)
	rs, _ := rpcBatch(t, env.URL,
		rpcReq("ws.dump", []any{"id_hash", 3, 0}, 1),
		rpcReq("ws.dump", []any{"id_hash", 3, 3}, 2),
		rpcReq("ws.close", []any{ids[0]}, 3),
		rpcReq("ws.close", []any{ids[0]}, 4), // already closing: an error
		rpcReq("ws.dump", []any{"id_hash", 1}, 5),
	)
	require.Len(t, rs, 5)
	dumps := map[int]rpcDump{}
	for _, i := range []int{0, 1, 4} {
		require.Nil(t, rs[i].Error)
		var d rpcDump
		require.NoError(t, json.Unmarshal(rs[i].Result, &d))
		dumps[i] = d
	}
	assert.Equal(t, ids, append(rpcIDs(dumps[0]), rpcIDs(dumps[1])...), "two pages, every connection once")
	assert.Equal(t, "OPEN", dumps[0].Connections[0].State)
	assert.Nil(t, rs[2].Error)
	require.NotNil(t, rs[3].Error)
	assert.Equal(t, "Error closing connection", rs[3].Error.Message)
	require.Len(t, dumps[4].Connections, 1)
	assert.Equal(t, ids[0], dumps[4].Connections[0].ID)
	assert.Equal(t, "CLOSING", dumps[4].Connections[0].State, "a dump after a ws.close sees it")
}

// TestRPCHost checks the Host check against DNS rebinding: a request for a
// Host that is neither loopback, localhost nor allowed gets 421 before its
// body is read, and runs nothing.
func TestRPCHost(t *testing.T) {
	env := rpcStartOpts(t, sipws.Config{}, &sipws.RPCOptions{AllowedHosts: []string{"Admin.Example", "10.1.2.3:9999", "[fd00::1]"}})
	_, port, err := net.SplitHostPort(strings.TrimPrefix(strings.TrimSuffix(env.URL, "/RPC"), "http://"))
	require.NoError(t, err)
	disable := `{"jsonrpc":"2.0","method":"ws.disable","id":1}`

	for _, host := range []string{
		"rebind.evil.example", "rebind.evil.example:" + port, "localhost.evil.example", "127.0.0.1.evil.example",
		"admin.example.evil", "evil.admin.example", "10.1.2.4", "[fd00::2]:" + port, "0x7f.0.0.1", "2130706433",
	} {
		for _, hdr := range [][]string{
			{"Host", host},
			// A page at the rebound name is same-origin to the browser.
			{"Host", host, "Origin", "http://" + host, "Sec-Fetch-Site", "same-origin"},
		} {
			h := rpcDo(t, http.MethodPost, env.URL, disable, hdr...)
			assert.Equal(t, http.StatusMisdirectedRequest, h.Status, "%v", hdr)
			r := rpcDecode(t, h.Body)
			require.NotNil(t, r.Error)
			assert.Equal(t, -32600, r.Error.Code)
			assert.Contains(t, r.Error.Data, strconv.Quote(host)+" is not allowed", "the reason names the Host")
			assert.True(t, env.Enabled(), "ws.disable did not run for Host %s", host)
		}
	}
	// Refused before the body is read: an oversized body gets 421, not 413.
	h := rpcDo(t, http.MethodPost, env.URL, strings.Repeat(" ", sipws.MaxRPCRequestSize+10)+disable, "Host", "rebind.evil.example")
	assert.Equal(t, http.StatusMisdirectedRequest, h.Status)

	// Loopback, localhost and the allowed names, with any port and case.
	for _, host := range []string{
		"127.0.0.1:" + port, "127.0.0.1", "127.9.8.7:" + port, "localhost:" + port, "LOCALHOST", "localhost.:" + port,
		"[::1]:" + port, "[::1]", "[::ffff:127.0.0.1]:" + port,
		"admin.example:" + port, "ADMIN.example", "admin.example.", "10.1.2.3:" + port, "10.1.2.3", "[fd00::1]:" + port,
	} {
		h := rpcDo(t, http.MethodPost, env.URL, disable, "Host", host)
		require.Equal(t, http.StatusOK, h.Status, "Host %s: %s", host, h.Body)
		assert.Nil(t, rpcDecode(t, h.Body).Error)
		assert.False(t, env.Enabled(), "ws.disable ran for Host %s", host)
		env.Enable()
	}

	// HTTP/1.0 without a Host names nothing: refused.
	nc, err := net.DialTimeout("tcp", "127.0.0.1:"+port, ioTimeout)
	require.NoError(t, err)
	defer nc.Close()
	require.NoError(t, nc.SetDeadline(time.Now().Add(ioTimeout)))
	_, err = fmt.Fprintf(nc, "POST /RPC HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(disable), disable)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	require.NoError(t, err)
	_ = resp.Body.Close()
	assert.Equal(t, http.StatusMisdirectedRequest, resp.StatusCode)
	assert.True(t, env.Enabled())
}

// ExampleNewRPCHandler serves the RPC on a private admin listener, reachable
// by loopback names and by one more name, and calls it by each.
func ExampleNewRPCHandler() {
	srv, err := sipws.New(sipws.Config{})
	if err != nil {
		panic(err)
	}
	defer exampleShutdown(srv)
	mux := http.NewServeMux()
	mux.Handle("/RPC", sipws.NewRPCHandler(srv, &sipws.RPCOptions{AllowedHosts: []string{"admin.example.internal"}}))
	admin := httptest.NewServer(mux) // on 127.0.0.1: never the public listener
	defer admin.Close()

	call := func(host string) {
		body := `{"jsonrpc":"2.0","method":"stats.get_statistics","params":["ws_current_connections"],"id":1}`
		req, err := http.NewRequest(http.MethodPost, admin.URL+"/RPC", strings.NewReader(body))
		if err != nil {
			panic(err)
		}
		req.Host = host
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			panic(err)
		}
		defer resp.Body.Close()
		var r struct {
			Result []string `json:"result"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&r)
		fmt.Println(resp.StatusCode, r.Result)
	}
	call("127.0.0.1:8081")
	call("localhost:8081")
	call("admin.example.internal:8081")
	call("rebind.evil.example:8081") // DNS rebinding: refused
	// Output:
	// 200 [websocket:ws_current_connections = 0]
	// 200 [websocket:ws_current_connections = 0]
	// 200 [websocket:ws_current_connections = 0]
	// 421 []
}
