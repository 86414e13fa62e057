package sipwsprom_test

import (
	"context"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sipws/sipws"
	"github.com/sipws/sipws/sipwsprom"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const ioTimeout = 5 * time.Second

// promEnv is a sipws server observed by a Metrics, with the metrics served
// by promhttp on a second loopback server.
type promEnv struct {
	srv        *sipws.Server
	addr       string
	metricsURL string
	opened     chan *sipws.Conn
	closed     chan sipws.CloseEvent
}

func startEnv(t *testing.T) *promEnv {
	t.Helper()
	e := &promEnv{opened: make(chan *sipws.Conn, 64), closed: make(chan sipws.CloseEvent, 64)}
	m := sipwsprom.New()
	srv, err := sipws.New(sipws.Config{
		Observer:     m,
		CloseTimeout: ioTimeout,
		OnOpen:       func(c *sipws.Conn) { e.opened <- c },
		OnMessage:    func(c *sipws.Conn, msg sipws.Message) { _ = c.SendMessage(msg.Type, msg.Data) },
		OnClosed:     func(ev sipws.CloseEvent) { e.closed <- ev },
	})
	require.NoError(t, err)
	m.Watch(srv)
	e.srv = srv

	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(m)
	mhs := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	hs := httptest.NewServer(srv)
	e.addr = strings.TrimPrefix(hs.URL, "http://")
	e.metricsURL = mhs.URL + "/metrics"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		assert.NoError(t, srv.Shutdown(ctx))
		hs.Close()
		mhs.Close()
	})
	return e
}

// dial opens a WebSocket connection with a real client and waits for the
// server to have it.
func (e *promEnv) dial(t *testing.T, proto string) (net.Conn, *sipws.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	c, _, _, err := ws.Dialer{Protocols: []string{proto}, Timeout: ioTimeout}.Dial(ctx, "ws://"+e.addr+"/")
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	require.NoError(t, c.SetDeadline(time.Now().Add(ioTimeout)))
	select {
	case conn := <-e.opened:
		return c, conn
	case <-time.After(ioTimeout):
		t.Fatal("no connection opened")
		return nil, nil
	}
}

func (e *promEnv) nextClosed(t *testing.T) sipws.CloseEvent {
	t.Helper()
	select {
	case ev := <-e.closed:
		return ev
	case <-time.After(ioTimeout):
		t.Fatal("OnClosed did not fire")
		return sipws.CloseEvent{}
	}
}

// scrape fetches the metrics in the text format and parses them with the
// Prometheus text parser.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	require.NoError(t, err)
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := (&http.Client{Timeout: ioTimeout}).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.True(t, strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain"), resp.Header.Get("Content-Type"))
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return fams
}

// metric finds the metric of a family with exactly the given labels.
func metric(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) *dto.Metric {
	t.Helper()
	f, ok := fams[name]
	require.True(t, ok, "no family %s", name)
	for _, m := range f.GetMetric() {
		got := map[string]string{}
		for _, l := range m.GetLabel() {
			got[l.GetName()] = l.GetValue()
		}
		want := map[string]string{}
		for i := 0; i+1 < len(labels); i += 2 {
			want[labels[i]] = labels[i+1]
		}
		if assert.ObjectsAreEqual(want, got) {
			return m
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return nil
}

func TestMetrics(t *testing.T) {
	e := startEnv(t)

	// Traffic: three sip clients and one msrp client send messages that
	// are echoed.
	type client struct {
		nc   net.Conn
		conn *sipws.Conn
	}
	var clients []client
	for _, p := range []string{"sip", "sip", "sip", "msrp"} {
		nc, conn := e.dial(t, p)
		clients = append(clients, client{nc, conn})
	}
	sizes := map[string][]int{"sip": {10, 300, 5000}, "msrp": {60000}}
	sent := map[string][2]float64{} // count, sum
	for _, c := range clients {
		sp := c.conn.Subprotocol().String()
		for _, n := range sizes[sp] {
			msg := strings.Repeat("x", n)
			require.NoError(t, wsutil.WriteClientText(c.nc, []byte(msg)))
			echo, op, err := wsutil.ReadServerData(c.nc)
			require.NoError(t, err)
			require.Equal(t, ws.OpText, op)
			require.Equal(t, msg, string(echo))
			s := sent[sp]
			sent[sp] = [2]float64{s[0] + 1, s[1] + float64(n)}
		}
	}

	// A refused handshake.
	e.srv.Disable()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	_, _, _, err := ws.Dialer{Protocols: []string{"sip"}}.Dial(ctx, "ws://"+e.addr+"/")
	cancel()
	var se ws.StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, http.StatusServiceUnavailable, int(se))
	e.srv.Enable()

	// A round trip: the server pings, the client's reader answers the
	// Ping before it returns the echo of the next message.
	c0 := clients[0]
	require.NoError(t, e.srv.Registry().Ping(c0.conn.ID()))
	require.NoError(t, wsutil.WriteClientText(c0.nc, []byte("after ping")))
	_, _, err = wsutil.ReadServerData(c0.nc)
	require.NoError(t, err)
	sent["sip"] = [2]float64{sent["sip"][0] + 1, sent["sip"][1] + float64(len("after ping"))}

	// Closes: the peer with 1000; the host with 4001.
	require.NoError(t, ws.WriteFrame(clients[1].nc, ws.MaskFrameInPlace(ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye")))))
	ev := e.nextClosed(t)
	require.Equal(t, sipws.CausePeer, ev.Cause)
	_ = clients[1].nc.Close() // the server waits for our FIN
	require.NoError(t, e.srv.Registry().Close(clients[2].conn.ID(), 4001, "go"))
	_, _, err = wsutil.ReadServerData(clients[2].nc) // answers the close
	require.Error(t, err)
	ev = e.nextClosed(t)
	require.Equal(t, sipws.CauseHost, ev.Cause)
	_ = clients[2].nc.Close()

	// The RTT is measured when the Pong is read, which may be after the
	// echo, and a frame is counted once its write returns, which may be
	// after the client read it: wait for both (14 frames sent: 11 echoes,
	// a ping, a close echo, a close), and for the server to be quiet.
	require.Eventually(t, func() bool { return e.srv.Stats().TransmittedFrames == 14 }, ioTimeout, time.Millisecond)
	var fams map[string]*dto.MetricFamily
	var st sipws.Stats
	require.Eventually(t, func() bool {
		before := e.srv.Stats()
		fams = scrape(t, e.metricsURL)
		st = e.srv.Stats()
		rtt := fams["sipws_keepalive_rtt_seconds"]
		return before == st && rtt != nil && rtt.GetMetric()[0].GetHistogram().GetSampleCount() == 1
	}, ioTimeout, 10*time.Millisecond)

	// Every statistic, with Kamailio's name, equal to Server.Stats.
	list := maps.Collect(st.All())
	require.Len(t, list, 25)
	for stat, value := range list {
		name := "sipws_" + stat
		f, ok := fams[name]
		require.True(t, ok, "missing %s", name)
		require.Len(t, f.GetMetric(), 1)
		m := f.GetMetric()[0]
		if strings.Contains(stat, "current_connections") || strings.Contains(stat, "max_concurrent") {
			assert.Equal(t, dto.MetricType_GAUGE, f.GetType(), name)
			assert.Equal(t, float64(value), m.GetGauge().GetValue(), name)
		} else {
			assert.Equal(t, dto.MetricType_COUNTER, f.GetType(), name)
			assert.Equal(t, float64(value), m.GetCounter().GetValue(), name)
		}
		assert.Contains(t, f.GetHelp(), "websocket:"+stat)
	}
	assert.Equal(t, uint64(2), st.CurrentConnections)
	assert.Equal(t, uint64(4), st.SuccessfulHandshakes)
	assert.Equal(t, uint64(1), st.FailedHandshakes)

	// Histograms.
	hist := func(name string, labels ...string) *dto.Histogram {
		t.Helper()
		h := metric(t, fams, name, labels...).GetHistogram()
		require.NotNil(t, h, name)
		return h
	}
	assert.Equal(t, dto.MetricType_HISTOGRAM, fams["sipws_handshake_duration_seconds"].GetType())
	assert.Equal(t, uint64(4), hist("sipws_handshake_duration_seconds", "status_class", "1xx").GetSampleCount())
	assert.Equal(t, uint64(1), hist("sipws_handshake_duration_seconds", "status_class", "5xx").GetSampleCount())
	assert.Positive(t, hist("sipws_handshake_duration_seconds", "status_class", "1xx").GetSampleSum())
	for _, sp := range []string{"sip", "msrp"} {
		for _, dir := range []string{"in", "out"} {
			h := hist("sipws_message_size_bytes", "direction", dir, "subprotocol", sp)
			assert.Equal(t, uint64(sent[sp][0]), h.GetSampleCount(), "%s %s", dir, sp)
			assert.Equal(t, sent[sp][1], h.GetSampleSum(), "%s %s", dir, sp)
		}
	}
	// 60000 bytes falls in the 65536 bucket, not below.
	for _, b := range hist("sipws_message_size_bytes", "direction", "in", "subprotocol", "msrp").GetBucket() {
		want := uint64(0)
		if b.GetUpperBound() >= 60000 {
			want = 1
		}
		assert.Equal(t, want, b.GetCumulativeCount(), "le=%v", b.GetUpperBound())
	}
	assert.Equal(t, uint64(1), hist("sipws_keepalive_rtt_seconds").GetSampleCount())
	assert.Equal(t, dto.MetricType_COUNTER, fams["sipws_closes_total"].GetType())
	assert.Equal(t, 1.0, metric(t, fams, "sipws_closes_total", "code", "1000", "cause", "peer").GetCounter().GetValue())
	assert.Equal(t, 1.0, metric(t, fams, "sipws_closes_total", "code", "4xxx", "cause", "host").GetCounter().GetValue())
	assert.Len(t, fams["sipws_closes_total"].GetMetric(), 2)

	// Shutdown closes the rest with 1001.
	ctx, cancel = context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	go func() {
		for _, c := range []client{clients[0], clients[3]} {
			_, _, _ = wsutil.ReadServerData(c.nc) // answer the close
			_ = c.nc.Close()
		}
	}()
	require.NoError(t, e.srv.Shutdown(ctx))
	fams = scrape(t, e.metricsURL)
	assert.Equal(t, 2.0, metric(t, fams, "sipws_closes_total", "code", "1001", "cause", "shutdown").GetCounter().GetValue())
	assert.Equal(t, 0.0, fams["sipws_ws_current_connections"].GetMetric()[0].GetGauge().GetValue())
}

// TestMetricsWithoutServer: before Watch, only the histograms are exported,
// and the collector registers and gathers cleanly.
func TestMetricsWithoutServer(t *testing.T) {
	m := sipwsprom.New()
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(m))
	m.Handshake(101, 3*time.Millisecond)
	m.Handshake(403, time.Millisecond)
	m.Handshake(999, time.Millisecond)
	m.MessageReceived(sipws.SIP, 100)
	m.RTT(20 * time.Millisecond)
	for _, code := range []sipws.CloseCode{1000, 1015, 3001, 3999, 4000, 4999, 1016, 2000, 5000, 0} {
		m.Closed(code, sipws.CausePeer)
	}
	fams, err := reg.Gather()
	require.NoError(t, err)
	got := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		got[f.GetName()] = f
	}
	assert.NotContains(t, got, "sipws_ws_current_connections")
	classes := map[string]uint64{}
	for _, mt := range got["sipws_handshake_duration_seconds"].GetMetric() {
		classes[mt.GetLabel()[0].GetValue()] = mt.GetHistogram().GetSampleCount()
	}
	assert.Equal(t, map[string]uint64{"1xx": 1, "4xx": 1, "5xx": 0, "other": 1}, classes)
	codes := map[string]float64{}
	for _, mt := range got["sipws_closes_total"].GetMetric() {
		for _, l := range mt.GetLabel() {
			if l.GetName() == "code" {
				codes[l.GetValue()] = mt.GetCounter().GetValue()
			}
		}
	}
	assert.Equal(t, map[string]float64{"1000": 1, "1015": 1, "3xxx": 2, "4xxx": 2, "other": 4}, codes)
}
