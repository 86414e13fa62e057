package sipws_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// This file checks Kamailio's statistics: every counter exact, computed from
// what the test did, also under concurrency, and that Shutdown leaves no
// goroutine behind.

// stLocal and stFailed are the documented classification of the ways a
// connection ends (CloseCause, Stats): whether this side ended it
// (ws_local_closed_connections, else ws_remote_closed_connections) and
// whether it ended abnormally (ws_failed_connections).
var (
	stLocal = map[sipws.CloseCause]bool{
		sipws.CausePeer:             false,
		sipws.CausePeerLost:         false,
		sipws.CauseProtocolError:    true,
		sipws.CauseHost:             true,
		sipws.CauseWriteFailure:     true,
		sipws.CauseKeepaliveTimeout: true,
		sipws.CauseShutdown:         true,
		sipws.CauseSlowConsumer:     true,
		sipws.CauseMessageTimeout:   true,
		sipws.CausePartialBytes:     true,
	}
	stFailed = map[sipws.CloseCause]bool{
		sipws.CausePeer:             false,
		sipws.CausePeerLost:         true,
		sipws.CauseProtocolError:    true,
		sipws.CauseHost:             false,
		sipws.CauseWriteFailure:     true,
		sipws.CauseKeepaliveTimeout: true,
		sipws.CauseShutdown:         false,
		sipws.CauseSlowConsumer:     true,
		sipws.CauseMessageTimeout:   true,
		sipws.CausePartialBytes:     true,
	}
)

func TestInitiatorClassification(t *testing.T) {
	names := map[sipws.CloseCause]string{
		sipws.CausePeer:             "peer",
		sipws.CausePeerLost:         "peer-lost",
		sipws.CauseProtocolError:    "protocol-error",
		sipws.CauseHost:             "host",
		sipws.CauseWriteFailure:     "write-failure",
		sipws.CauseKeepaliveTimeout: "keepalive-timeout",
		sipws.CauseShutdown:         "shutdown",
		sipws.CauseSlowConsumer:     "slow-consumer",
		sipws.CauseMessageTimeout:   "message-timeout",
		sipws.CausePartialBytes:     "partial-bytes",
	}
	for i, name := range names {
		assert.Equal(t, name, i.String())
		assert.Equal(t, stLocal[i], i.Local(), "%s: Local", name)
		assert.Equal(t, stFailed[i], sipws.CauseFailed(i), "%s: failed", name)
	}
}

// stSP is the model of one sub-protocol's counters.
type stSP struct {
	handshakes, local, remote, failed uint64
	rx, tx                            uint64 // data frames
	cur, max                          uint64
}

// stModel is what the counters must be, kept by the test as it acts.
type stModel struct {
	mu       sync.Mutex
	failedHS uint64
	rx, tx   uint64 // all frames
	cur, max uint64
	sp       map[sipws.Subprotocol]*stSP
}

func newStModel() *stModel {
	return &stModel{sp: map[sipws.Subprotocol]*stSP{sipws.SIP: {}, sipws.MSRP: {}}}
}

// open counts a successful handshake.
func (m *stModel) open(sp sipws.Subprotocol) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sp[sp]
	s.handshakes++
	s.cur++
	s.max = max(s.max, s.cur)
	m.cur++
	m.max = max(m.max, m.cur)
}

// end counts the end of a connection; failed is whether it ended abnormally
// (CloseEvent.Err set): every stFailed cause, and a close handshake that got
// no reply.
func (m *stModel) end(sp sipws.Subprotocol, by sipws.CloseCause, failed bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sp[sp]
	if stLocal[by] {
		s.local++
	} else {
		s.remote++
	}
	if failed {
		s.failed++
	}
	s.cur--
	m.cur--
}

// data counts data frames received and sent on a connection.
func (m *stModel) data(sp sipws.Subprotocol, rx, tx int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rx += uint64(rx)
	m.tx += uint64(tx)
	m.sp[sp].rx += uint64(rx)
	m.sp[sp].tx += uint64(tx)
}

// control counts control frames received and sent.
func (m *stModel) control(rx, tx int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rx += uint64(rx)
	m.tx += uint64(tx)
}

// refused counts a failed handshake.
func (m *stModel) refused() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failedHS++
}

// want returns the Stats the model predicts.
func (m *stModel) want() sipws.Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	sp := func(s *stSP) sipws.SubprotocolStats {
		return sipws.SubprotocolStats{
			CurrentConnections:       s.cur,
			MaxConcurrentConnections: s.max,
			FailedConnections:        s.failed,
			LocalClosedConnections:   s.local,
			RemoteClosedConnections:  s.remote,
			ReceivedFrames:           s.rx,
			TransmittedFrames:        s.tx,
			SuccessfulHandshakes:     s.handshakes,
		}
	}
	sip, msrp := m.sp[sipws.SIP], m.sp[sipws.MSRP]
	return sipws.Stats{
		CurrentConnections:       m.cur,
		MaxConcurrentConnections: m.max,
		FailedConnections:        sip.failed + msrp.failed,
		LocalClosedConnections:   sip.local + msrp.local,
		RemoteClosedConnections:  sip.remote + msrp.remote,
		ReceivedFrames:           m.rx,
		TransmittedFrames:        m.tx,
		SuccessfulHandshakes:     sip.handshakes + msrp.handshakes,
		FailedHandshakes:         m.failedHS,
		SIP:                      sp(sip),
		MSRP:                     sp(msrp),
	}
}

// stCheck waits (bounded) until the counters equal the model — a frame is
// counted once its write returns, which may be just after the peer read it —
// then checks the invariants, with the server at rest.
func stCheck(t *testing.T, ts *testServer, m *stModel) {
	t.Helper()
	want := m.want()
	deadline := time.Now().Add(ioTimeout)
	got := ts.Stats()
	for got != want && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		got = ts.Stats()
	}
	require.Equal(t, want, got, "counters")
	stInvariants(t, got, ts.Registry().Len())
}

// stInvariants checks what holds between the counters at rest.
func stInvariants(t *testing.T, st sipws.Stats, live int) {
	t.Helper()
	assert.Equal(t, uint64(live), st.CurrentConnections, "ws_current_connections = Registry.Len()")
	assert.Equal(t, st.SuccessfulHandshakes-st.CurrentConnections, st.LocalClosedConnections+st.RemoteClosedConnections,
		"local + remote closed = handshakes - current")
	for _, s := range []sipws.SubprotocolStats{st.SIP, st.MSRP} {
		assert.Equal(t, s.SuccessfulHandshakes-s.CurrentConnections, s.LocalClosedConnections+s.RemoteClosedConnections)
		assert.LessOrEqual(t, s.FailedConnections, s.LocalClosedConnections+s.RemoteClosedConnections)
		assert.LessOrEqual(t, s.CurrentConnections, s.MaxConcurrentConnections)
	}
	assert.Equal(t, st.CurrentConnections, st.SIP.CurrentConnections+st.MSRP.CurrentConnections)
	assert.Equal(t, st.SuccessfulHandshakes, st.SIP.SuccessfulHandshakes+st.MSRP.SuccessfulHandshakes)
	assert.Equal(t, st.FailedConnections, st.SIP.FailedConnections+st.MSRP.FailedConnections)
	assert.Equal(t, st.LocalClosedConnections, st.SIP.LocalClosedConnections+st.MSRP.LocalClosedConnections)
	assert.Equal(t, st.RemoteClosedConnections, st.SIP.RemoteClosedConnections+st.MSRP.RemoteClosedConnections)
	assert.LessOrEqual(t, st.MaxConcurrentConnections, st.SIP.MaxConcurrentConnections+st.MSRP.MaxConcurrentConnections)
	assert.GreaterOrEqual(t, st.MaxConcurrentConnections, max(st.SIP.MaxConcurrentConnections, st.MSRP.MaxConcurrentConnections))
	// Totals count control frames too; the per-sub-protocol ones data only.
	assert.GreaterOrEqual(t, st.ReceivedFrames, st.SIP.ReceivedFrames+st.MSRP.ReceivedFrames)
	assert.GreaterOrEqual(t, st.TransmittedFrames, st.SIP.TransmittedFrames+st.MSRP.TransmittedFrames)
}

// stConn is a client and its server side in the scenario.
type stConn struct {
	c    *rawClient
	conn *sipws.Conn
	sp   sipws.Subprotocol
}

// stEnded waits for the OnClosed of x, checks who ended it and counts it.
func stEnded(t *testing.T, ts *testServer, m *stModel, x stConn, by sipws.CloseCause) {
	t.Helper()
	stEndedAs(t, ts, m, x, by, stFailed[by])
}

// stEndedAs is stEnded for an end whose abnormality the scenario decides (a
// close handshake of ours that the peer never answered is abnormal).
func stEndedAs(t *testing.T, ts *testServer, m *stModel, x stConn, by sipws.CloseCause, failed bool) {
	t.Helper()
	ev := ts.nextClosed(t)
	require.Equal(t, x.conn.ID(), ev.ID)
	require.Equal(t, by, ev.Cause, "initiator of %d", ev.ID)
	require.Equal(t, failed, ev.Err != nil, "Closed.Err of %d: %v", ev.ID, ev.Err)
	m.end(x.sp, by, failed)
}

func TestStatsExact(t *testing.T) {
	ts := startServer(t, sipws.Config{
		CloseTimeout: 300 * time.Millisecond,
		Keepalive:    sipws.KeepaliveNone,
		PingData:     []byte("st"),
		OnMessage:    func(c *sipws.Conn, m sipws.Message) { _ = c.SendMessage(m.Type, m.Data) },
	})
	m := newStModel()
	stCheck(t, ts, m) // all zero

	// Refused handshakes.
	refuse := func(req string, status int) {
		t.Helper()
		_, resp := rawDial(t, ts.Addr, req)
		require.Equal(t, status, resp.StatusCode)
		m.refused()
	}
	refuse(handshakeRequest(ts.Addr, ""), http.StatusBadRequest)
	refuse(handshakeRequest(ts.Addr, "foo"), http.StatusBadRequest)
	refuse(strings.Replace(handshakeRequest(ts.Addr, "sip"), "Version: 13", "Version: 8", 1), http.StatusUpgradeRequired)
	ts.Disable()
	refuse(handshakeRequest(ts.Addr, "sip"), http.StatusServiceUnavailable)
	ts.Enable()
	stCheck(t, ts, m)

	// Seven connections open at once: 4 sip, 3 msrp.
	var xs []stConn
	open := func(proto string, sp sipws.Subprotocol) stConn {
		t.Helper()
		c, conn := clOpen(t, ts, proto)
		require.Equal(t, sp, conn.Subprotocol())
		m.open(sp)
		x := stConn{c, conn, sp}
		xs = append(xs, x)
		return x
	}
	for i := range 7 {
		if i%2 == 0 {
			open("sip", sipws.SIP)
		} else {
			open("msrp", sipws.MSRP)
		}
	}
	stCheck(t, ts, m)
	require.Equal(t, 7, ts.Registry().Len())

	// Traffic.
	for k, x := range xs {
		n := k%3 + 1
		for j := range n {
			msg := fmt.Sprintf("msg %d/%d", k, j)
			if k == 1 && j == 0 {
				x.c.writeFrame(true, 0, 0x2, []byte(msg), true) // binary
			} else {
				x.c.sendText(msg)
			}
			f := x.c.mustReadFrame()
			require.Equal(t, msg, string(f.Payload))
		}
		m.data(x.sp, n, n)
		if k%2 == 0 { // the client pings; the server pongs
			x.c.writeFrame(true, 0, 0x9, []byte("cp"), true)
			require.Equal(t, byte(0xA), x.c.mustReadFrame().Op)
			m.control(1, 1)
		}
	}
	// A fragmented message: two data frames, one message.
	x := xs[3]
	x.c.writeFrame(false, 0, 0x1, []byte("frag-"), true)
	x.c.writeFrame(true, 0, 0x0, []byte("ment"), true)
	require.Equal(t, "frag-ment", string(x.c.mustReadFrame().Payload))
	m.data(x.sp, 2, 1)
	// The server pushes: a message, a ping (answered), an unsolicited pong.
	require.NoError(t, xs[3].conn.Send([]byte("push")))
	require.Equal(t, "push", string(xs[3].c.mustReadFrame().Payload))
	m.data(xs[3].sp, 0, 1)
	require.NoError(t, ts.Registry().Ping(xs[5].conn.ID()))
	f := xs[5].c.mustReadFrame()
	require.Equal(t, byte(0x9), f.Op)
	xs[5].c.writeFrame(true, 0, 0xA, f.Payload, true)
	m.control(1, 1)
	require.NoError(t, ts.Registry().Pong(xs[6].conn.ID()))
	require.Equal(t, byte(0xA), xs[6].c.mustReadFrame().Op)
	m.control(0, 1)
	stCheck(t, ts, m)

	// Six of them end, each its own way.
	// 0 (sip): the peer closes.
	xs[0].c.sendClose(1000, "bye")
	require.Equal(t, uint16(1000), func() uint16 { c, _ := clReadClose(t, xs[0].c); return c }())
	xs[0].c.expectEOF(ioTimeout)
	m.control(1, 1)
	stEnded(t, ts, m, xs[0], sipws.CausePeer)
	// 1 (msrp): TCP FIN.
	require.NoError(t, xs[1].c.conn.Close())
	stEnded(t, ts, m, xs[1], sipws.CausePeerLost)
	// 2 (sip): TCP RST.
	require.NoError(t, xs[2].c.conn.(*net.TCPConn).SetLinger(0))
	require.NoError(t, xs[2].c.conn.Close())
	stEnded(t, ts, m, xs[2], sipws.CausePeerLost)
	// 3 (msrp): a protocol error (an unmasked frame, not counted as
	// received); the server sends close 1002.
	xs[3].c.writeFrame(true, 0, 0x1, []byte("unmasked"), false)
	xs[3].c.expectClose(1002, ioTimeout)
	m.control(0, 1)
	stEnded(t, ts, m, xs[3], sipws.CauseProtocolError)
	// 4 (sip): Registry.Close, answered.
	require.NoError(t, ts.Registry().Close(xs[4].conn.ID(), 4000, "st"))
	clReadClose(t, xs[4].c)
	xs[4].c.sendClose(4000, "")
	xs[4].c.expectEOF(ioTimeout)
	m.control(1, 1)
	stEnded(t, ts, m, xs[4], sipws.CauseHost)
	// 5 (msrp): Conn.Close, never answered.
	require.NoError(t, xs[5].conn.Close(0, ""))
	clReadClose(t, xs[5].c)
	m.control(0, 1)
	stEndedAs(t, ts, m, xs[5], sipws.CauseHost, true)
	stCheck(t, ts, m)
	require.Equal(t, 1, ts.Registry().Len())

	// Two more: the maximum stays.
	open("sip", sipws.SIP)
	open("msrp", sipws.MSRP)
	refuse(handshakeRequest(ts.Addr, "bogus"), http.StatusBadRequest)
	stCheck(t, ts, m)
	assert.Equal(t, uint64(7), ts.Stats().MaxConcurrentConnections)

	// Shutdown: the three left answer the 1001.
	left := []stConn{xs[6], xs[7], xs[8]}
	done := make(chan error, 1)
	go func() { done <- ts.Shutdown(context.Background()) }()
	for _, x := range left {
		code, _ := clReadClose(t, x.c)
		require.Equal(t, uint16(1001), code)
		x.c.sendClose(1001, "")
		x.c.expectEOF(ioTimeout)
		require.NoError(t, x.c.conn.Close())
		m.control(1, 1)
	}
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(ioTimeout):
		t.Fatal("Shutdown did not return")
	}
	ended := map[sipws.ConnID]sipws.CloseEvent{}
	for range left {
		ev := ts.nextClosed(t)
		ended[ev.ID] = ev
	}
	for _, x := range left {
		ev, ok := ended[x.conn.ID()]
		require.True(t, ok)
		require.Equal(t, sipws.CauseShutdown, ev.Cause)
		require.NoError(t, ev.Err, "the client answered the shutdown's close")
		m.end(x.sp, sipws.CauseShutdown, false)
	}
	refuse(handshakeRequest(ts.Addr, "sip"), http.StatusServiceUnavailable)
	stCheck(t, ts, m)
	ts.noMoreClosed(t, clQuiet)

	st := ts.Stats()
	t.Logf("final: %+v", st)
	assert.Zero(t, st.CurrentConnections)
	assert.Equal(t, 0, ts.Registry().Len())
}

// stByName is the Kamailio name of every field of Stats, written out field
// by field.
func stByName(s sipws.Stats) map[string]uint64 {
	return map[string]uint64{
		"ws_current_connections":             s.CurrentConnections,
		"ws_max_concurrent_connections":      s.MaxConcurrentConnections,
		"ws_failed_connections":              s.FailedConnections,
		"ws_local_closed_connections":        s.LocalClosedConnections,
		"ws_remote_closed_connections":       s.RemoteClosedConnections,
		"ws_received_frames":                 s.ReceivedFrames,
		"ws_transmitted_frames":              s.TransmittedFrames,
		"ws_successful_handshakes":           s.SuccessfulHandshakes,
		"ws_failed_handshakes":               s.FailedHandshakes,
		"ws_sip_current_connections":         s.SIP.CurrentConnections,
		"ws_sip_max_concurrent_connections":  s.SIP.MaxConcurrentConnections,
		"ws_sip_failed_connections":          s.SIP.FailedConnections,
		"ws_sip_local_closed_connections":    s.SIP.LocalClosedConnections,
		"ws_sip_remote_closed_connections":   s.SIP.RemoteClosedConnections,
		"ws_sip_received_frames":             s.SIP.ReceivedFrames,
		"ws_sip_transmitted_frames":          s.SIP.TransmittedFrames,
		"ws_sip_successful_handshakes":       s.SIP.SuccessfulHandshakes,
		"ws_msrp_current_connections":        s.MSRP.CurrentConnections,
		"ws_msrp_max_concurrent_connections": s.MSRP.MaxConcurrentConnections,
		"ws_msrp_failed_connections":         s.MSRP.FailedConnections,
		"ws_msrp_local_closed_connections":   s.MSRP.LocalClosedConnections,
		"ws_msrp_remote_closed_connections":  s.MSRP.RemoteClosedConnections,
		"ws_msrp_received_frames":            s.MSRP.ReceivedFrames,
		"ws_msrp_transmitted_frames":         s.MSRP.TransmittedFrames,
		"ws_msrp_successful_handshakes":      s.MSRP.SuccessfulHandshakes,
	}
}

func TestStatsList(t *testing.T) {
	// The 25 names in the order kamcmd stats.get_statistics websocket: prints
	// them (kamailio-behaviour.md §5).
	kamailio := []string{
		"ws_current_connections", "ws_failed_connections", "ws_failed_handshakes",
		"ws_local_closed_connections", "ws_max_concurrent_connections",
		"ws_msrp_current_connections", "ws_msrp_failed_connections",
		"ws_msrp_local_closed_connections", "ws_msrp_max_concurrent_connections",
		"ws_msrp_received_frames", "ws_msrp_remote_closed_connections",
		"ws_msrp_successful_handshakes", "ws_msrp_transmitted_frames",
		"ws_received_frames", "ws_remote_closed_connections",
		"ws_sip_current_connections", "ws_sip_failed_connections",
		"ws_sip_local_closed_connections", "ws_sip_max_concurrent_connections",
		"ws_sip_received_frames", "ws_sip_remote_closed_connections",
		"ws_sip_successful_handshakes", "ws_sip_transmitted_frames",
		"ws_successful_handshakes", "ws_transmitted_frames",
	}
	require.Len(t, kamailio, 25)
	require.True(t, slices.IsSorted(kamailio))

	// Every field a different value, so that a swapped name shows.
	var s sipws.Stats
	fields := []*uint64{
		&s.CurrentConnections, &s.MaxConcurrentConnections, &s.FailedConnections,
		&s.LocalClosedConnections, &s.RemoteClosedConnections, &s.ReceivedFrames,
		&s.TransmittedFrames, &s.SuccessfulHandshakes, &s.FailedHandshakes,
	}
	for _, sp := range []*sipws.SubprotocolStats{&s.SIP, &s.MSRP} {
		fields = append(fields, &sp.CurrentConnections, &sp.MaxConcurrentConnections, &sp.FailedConnections,
			&sp.LocalClosedConnections, &sp.RemoteClosedConnections, &sp.ReceivedFrames,
			&sp.TransmittedFrames, &sp.SuccessfulHandshakes)
	}
	require.Len(t, fields, 25)
	for i, f := range fields {
		*f = uint64(1000 + i*7)
	}
	checkList := func(s sipws.Stats) {
		t.Helper()
		var names []string
		byName := stByName(s)
		for name, v := range s.All() {
			names = append(names, name)
			assert.Equal(t, byName[name], v, "value of %s", name)
		}
		assert.Equal(t, kamailio, names)
	}
	checkList(s)

	// And on a live server's counters.
	ts := startServer(t, sipws.Config{OnMessage: func(c *sipws.Conn, m sipws.Message) { _ = c.Send(m.Data) }})
	c, _ := clOpen(t, ts, "msrp")
	c.sendText("x")
	c.mustReadFrame()
	require.NoError(t, c.conn.Close())
	ts.nextClosed(t)
	live := ts.Stats()
	assert.NotZero(t, live.MSRP.ReceivedFrames)
	checkList(live)
}

// stDialErr opens a WebSocket connection without the testing.T helpers, for
// use off the test goroutine.
func stDialErr(addr, proto string) (*rawClient, error) {
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return nil, err
	}
	c := &rawClient{conn: conn, br: bufio.NewReader(conn)}
	_ = conn.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := io.WriteString(conn, handshakeRequest(addr, proto)); err != nil {
		_ = conn.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		_ = conn.Close()
		return nil, fmt.Errorf("handshake: status %d", resp.StatusCode)
	}
	_ = conn.SetDeadline(time.Time{})
	return c, nil
}

// stWrite sends a frame, masked or not.
func stWrite(c *rawClient, fin bool, op byte, p []byte, masked bool) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := c.conn.Write(encodeFrame(fin, 0, op, p, masked))
	return err
}

// stReadOp reads one frame and checks its opcode.
func stReadOp(c *rawClient, op byte) (frame, error) {
	f, err := c.readFrame()
	if err != nil {
		return f, err
	}
	if f.Op != op {
		return f, fmt.Errorf("got opcode %#x %q, want %#x", f.Op, f.Payload, op)
	}
	return f, nil
}

// stReadClose reads a close frame with the given code and then the server's
// end of the TCP connection.
func stReadClose(c *rawClient, code uint16) error {
	f, err := stReadOp(c, 0x8)
	if err != nil {
		return err
	}
	if got, _ := f.closeCode(); got != code {
		return fmt.Errorf("close code %d, want %d", got, code)
	}
	return nil
}

// stReadEOF waits for the server to close the TCP connection.
func stReadEOF(c *rawClient) error {
	_ = c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := c.br.ReadByte()
	switch {
	case err == nil:
		return fmt.Errorf("expected the end of the connection, got byte %#x", b)
	case errors.Is(err, io.EOF):
		return nil
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("the server did not close the connection")
	}
	return nil // reset: closed too
}

// Close modes of the concurrency test.
const (
	stModeClean = iota
	stModeFIN
	stModeRST
	stModeProtocolError
	stModeServerClose
	stModes
)

var stModeInitiator = [stModes]sipws.CloseCause{
	stModeClean:         sipws.CausePeer,
	stModeFIN:           sipws.CausePeerLost,
	stModeRST:           sipws.CausePeerLost,
	stModeProtocolError: sipws.CauseProtocolError,
	stModeServerClose:   sipws.CauseHost,
}

func TestStatsConcurrent(t *testing.T) {
	const n = 200
	ts := startServer(t, sipws.Config{
		CloseTimeout: 3 * time.Second,
		Keepalive:    sipws.KeepaliveNone,
		OnMessage: func(c *sipws.Conn, m sipws.Message) {
			if string(m.Data) == "close-me" {
				_ = c.Close(4001, "server side")
				return
			}
			_ = c.SendMessage(m.Type, m.Data)
		},
	})
	m := newStModel()

	var (
		mu     sync.Mutex
		byAddr = map[string]int{} // client address -> goroutine
		errs   []error
	)
	fail := func(i int, err error) {
		mu.Lock()
		errs = append(errs, fmt.Errorf("client %d: %w", i, err))
		mu.Unlock()
	}
	// All connections are open at the same time before any ends, so the
	// maxima are exact. The barrier opens once the server has counted every
	// one of them: a client has its 101 a moment before the server counts
	// its connection (the count follows the write of the 101), so a barrier
	// on the clients' 101s alone let a connection end before the last one
	// was counted, and the maximum came out one short.
	var ready sync.WaitGroup
	ready.Add(n)
	allOpen := make(chan struct{})
	go func() {
		defer close(allOpen)
		ready.Wait()
		deadline := time.Now().Add(2 * ioTimeout)
		for ts.Stats().CurrentConnections < n && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}()

	run := func(i int) error {
		var once sync.Once
		markReady := func() { once.Do(ready.Done) }
		defer markReady()
		proto, sp := "sip", sipws.SIP
		if i%2 == 1 {
			proto, sp = "msrp", sipws.MSRP
		}
		c, err := stDialErr(ts.Addr, proto)
		if err != nil {
			return err
		}
		defer func() { _ = c.conn.Close() }()
		m.open(sp)
		mu.Lock()
		byAddr[c.conn.LocalAddr().String()] = i
		mu.Unlock()
		markReady()
		select {
		case <-allOpen:
		case <-time.After(2 * ioTimeout):
			return errors.New("the others did not open")
		}

		k := i%3 + 1
		for j := range k {
			msg := fmt.Sprintf("c%d m%d", i, j)
			op := byte(0x1)
			if j == 1 {
				op = 0x2
			}
			if err := stWrite(c, true, op, []byte(msg), true); err != nil {
				return err
			}
			f, err := stReadOp(c, op)
			if err != nil {
				return err
			}
			if string(f.Payload) != msg {
				return fmt.Errorf("echo %q, want %q", f.Payload, msg)
			}
		}
		m.data(sp, k, k)
		if i%4 == 0 {
			if err := stWrite(c, true, 0x9, []byte("p"), true); err != nil {
				return err
			}
			if _, err := stReadOp(c, 0xA); err != nil {
				return err
			}
			m.control(1, 1)
		}

		switch i % stModes {
		case stModeClean:
			if err := stWrite(c, true, 0x8, []byte{0x03, 0xe8}, true); err != nil {
				return err
			}
			if err := stReadClose(c, 1000); err != nil {
				return err
			}
			m.control(1, 1)
			return stReadEOF(c)
		case stModeFIN:
			return c.conn.Close()
		case stModeRST:
			if err := c.conn.(*net.TCPConn).SetLinger(0); err != nil {
				return err
			}
			return c.conn.Close()
		case stModeProtocolError:
			if err := stWrite(c, true, 0x1, []byte("no mask"), false); err != nil {
				return err
			}
			if err := stReadClose(c, 1002); err != nil {
				return err
			}
			m.control(0, 1)
			return stReadEOF(c)
		case stModeServerClose:
			if err := stWrite(c, true, 0x1, []byte("close-me"), true); err != nil {
				return err
			}
			if err := stReadClose(c, 4001); err != nil {
				return err
			}
			if err := stWrite(c, true, 0x8, []byte{0x0f, 0xa1}, true); err != nil {
				return err
			}
			m.data(sp, 1, 0)
			m.control(1, 1)
			return stReadEOF(c)
		}
		return nil
	}

	concurrently(n, func(i int) {
		if err := run(i); err != nil {
			fail(i, err)
		}
	})
	require.Empty(t, errs)

	// Exactly one OnClosed per connection, each with the right initiator.
	seen := map[sipws.ConnID]bool{}
	for range n {
		ev := ts.nextClosed(t)
		require.False(t, seen[ev.ID], "second OnClosed for %d", ev.ID)
		seen[ev.ID] = true
		i, ok := byAddr[ev.RemoteAddr.String()]
		require.True(t, ok, "OnClosed for an unknown client %s", ev.RemoteAddr)
		require.Equal(t, stModeInitiator[i%stModes], ev.Cause, "client %d (%s)", i, ev.RemoteAddr)
		wantSP := sipws.SIP
		if i%2 == 1 {
			wantSP = sipws.MSRP
		}
		require.Equal(t, wantSP, ev.Subprotocol)
		m.end(ev.Subprotocol, stModeInitiator[i%stModes], stFailed[stModeInitiator[i%stModes]])
	}
	require.Len(t, seen, n)
	ts.noMoreClosed(t, clQuiet)
	require.Equal(t, 0, ts.Registry().Len())

	want := m.want()
	require.Equal(t, uint64(n), want.MaxConcurrentConnections)
	require.Equal(t, uint64(n/2), want.SIP.MaxConcurrentConnections)
	stCheck(t, ts, m)
}

func TestShutdownLeavesNoGoroutines(t *testing.T) {
	ignore := goleak.IgnoreCurrent()

	opened := make(chan *sipws.Conn, 16)
	closed := make(chan sipws.CloseEvent, 16)
	srv, err := sipws.New(sipws.Config{
		KeepaliveInterval: 5 * time.Millisecond,
		KeepaliveTimeout:  time.Minute,
		KeepaliveWorkers:  3,
		CloseTimeout:      300 * time.Millisecond,
		OnOpen:            func(c *sipws.Conn) { opened <- c },
		OnMessage:         func(c *sipws.Conn, m sipws.Message) { _ = c.Send(m.Data) },
		OnClosed:          func(ev sipws.CloseEvent) { closed <- ev },
	})
	require.NoError(t, err)
	hs := httptest.NewServer(srv)
	addr := strings.TrimPrefix(hs.URL, "http://")
	defer hs.Close() // in case of failure; Close is idempotent

	const n = 5
	var cs []*rawClient
	for i := range n {
		c := dialWS(t, addr, "sip")
		select {
		case <-opened:
		case <-time.After(ioTimeout):
			t.Fatal("no connection opened")
		}
		c.sendText(fmt.Sprintf("hello %d", i))
		require.Equal(t, fmt.Sprintf("hello %d", i), string(c.mustReadFrame().Payload))
		cs = append(cs, c)
	}
	conns := srv.Registry().Dump(sipws.DumpQuery{Order: sipws.DumpByID, Limit: -1}).Conns
	require.Len(t, conns, n)

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	// All but the last answer the close; the last never does.
	for _, c := range cs[:n-1] {
		code, _ := clReadClose(t, c)
		require.Equal(t, uint16(1001), code)
		c.sendClose(1001, "")
		c.expectEOF(ioTimeout)
		require.NoError(t, c.conn.Close())
	}
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(ioTimeout):
		t.Fatal("Shutdown did not return")
	}
	require.Len(t, closed, n)
	require.NoError(t, cs[n-1].conn.Close())
	hs.Close()

	goleak.VerifyNone(t, ignore)
}
