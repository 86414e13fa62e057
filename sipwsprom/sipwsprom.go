// Package sipwsprom exports a sipws server's statistics and measurements to
// Prometheus. It lives apart from sipws so that a host that does not use
// Prometheus does not link it.
//
// A *Metrics is both a sipws.Observer, which turns measurements into
// histograms, and a prometheus.Collector:
//
//	m := sipwsprom.New()
//	cfg.Observer = m
//	srv, err := sipws.New(cfg)
//	...
//	m.Watch(srv)
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(m)
//	admin := http.NewServeMux() // served on loopback, not on the public listener
//	admin.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// Serve /metrics, like sipws.NewRPCHandler, on a listener of its own bound
// to loopback (or behind the host's authentication), never on the public
// listener that takes the WebSocket handshakes: the metrics have no
// authentication and tell how many users are connected (see the Example).
//
// Every statistic of sipws.Stats.All is exported with its Kamailio name
// prefixed by "sipws_" (sipws_ws_current_connections,
// sipws_ws_sip_received_frames, ...): the *_current_connections and
// *_max_concurrent_connections ones as gauges, the others as counters. The
// names are Kamailio's exactly, so the counters do not end in _total.
//
// On top of them come what Kamailio does not measure:
//
//	sipws_handshake_duration_seconds{status_class}       histogram; "1xx" (101), "2xx" (200: over HTTP/2), "4xx", "5xx"
//	sipws_message_size_bytes{direction,subprotocol}      histogram; "in"/"out", "sip"/"msrp"
//	sipws_keepalive_rtt_seconds                          histogram; Ping to Pong
//	sipws_closes_total{code,cause}                       counter
//
// The buckets of the histograms are 0.5 ms to 2.5 s for the handshake (an
// Authorize hook may query a database), 64 B to 1 MiB by powers of 4 for
// message sizes, and 1 ms to 5 s for the keepalive round trip.
//
// In sipws_closes_total, code is the close code for the codes of RFC 6455
// and the IANA registry (1000–1015), "3xxx" and "4xxx" for the registered and
// private ranges (so that peers cannot make up series at will), and "other"
// otherwise; cause is sipws.CloseCause's name ("peer", "peer-lost",
// "protocol-error", "host", "write-failure", "keepalive-timeout",
// "shutdown", "slow-consumer", "replaced", "message-timeout",
// "partial-bytes"); "replaced" counts the connections closed because a new
// one bound the same registration flow (sipws.Conn.BindInstance).
package sipwsprom

import (
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sipws/sipws"
)

// namespace prefixes every metric name.
const namespace = "sipws"

// Metrics is a sipws.Observer that keeps histograms of what it observes and
// a prometheus.Collector of them and, once Watch is called, of a server's
// statistics. Create it with New; it is safe for concurrent use.
type Metrics struct {
	srv atomic.Pointer[sipws.Server]

	handshake *prometheus.HistogramVec
	size      *prometheus.HistogramVec
	rtt       prometheus.Histogram
	closes    *prometheus.CounterVec

	// Observers resolved in advance, so that the hot paths do not hash
	// label values; they also make the series exist from the start.
	hsByClass [6]prometheus.Observer    // 1xx, 4xx and 5xx, the classes sipws answers with
	sizeBy    [2][2]prometheus.Observer // [direction][subprotocol]

	stats []statDesc
}

// statDesc is the description of one sipws statistic.
type statDesc struct {
	name string
	desc *prometheus.Desc
	typ  prometheus.ValueType
}

// Buckets of the histograms.
var (
	// handshakeBuckets are the buckets of sipws_handshake_duration_seconds:
	// 0.5 ms to 2.5 s (an Authorize hook may query a database).
	handshakeBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	// messageSizeBuckets are the buckets of sipws_message_size_bytes: 64 B
	// to 1 MiB by powers of 4 (sipws.Config.MaxMessageSize is 64 KiB
	// by default).
	messageSizeBuckets = prometheus.ExponentialBuckets(64, 4, 8)
	// rttBuckets are the buckets of sipws_keepalive_rtt_seconds: 1 ms to 5 s.
	rttBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
)

// New returns a Metrics with empty histograms. Set it as sipws.Config.Observer,
// call Watch with the server, and register it.
func New() *Metrics {
	m := &Metrics{
		handshake: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "handshake_duration_seconds",
			Help:      "Time from the start of a WebSocket handshake to its response, by status class (1xx: accepted).",
			Buckets:   handshakeBuckets,
		}, []string{"status_class"}),
		size: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "message_size_bytes",
			Help:      "Size of WebSocket messages received (in) and sent (out), by sub-protocol.",
			Buckets:   messageSizeBuckets,
		}, []string{"direction", "subprotocol"}),
		rtt: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace,
			Name:      "keepalive_rtt_seconds",
			Help:      "Round-trip time from a Ping to its Pong.",
			Buckets:   rttBuckets,
		}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace,
			Name:      "closes_total",
			Help:      "Connections ended, by close code and by who or what ended them.",
		}, []string{"code", "cause"}),
	}
	for _, class := range []int{1, 4, 5} {
		m.hsByClass[class] = m.handshake.WithLabelValues(strconv.Itoa(class) + "xx")
	}
	for d, dir := range []string{"in", "out"} {
		for s, sp := range []sipws.Subprotocol{sipws.SIP, sipws.MSRP} {
			m.sizeBy[d][s] = m.size.WithLabelValues(dir, sp.String())
		}
	}
	for name := range (sipws.Stats{}).All() {
		typ := prometheus.CounterValue
		if strings.HasSuffix(name, "_current_connections") || strings.HasSuffix(name, "_max_concurrent_connections") {
			typ = prometheus.GaugeValue
		}
		m.stats = append(m.stats, statDesc{
			name: name,
			desc: prometheus.NewDesc(namespace+"_"+name, statHelp(name), nil, nil),
			typ:  typ,
		})
	}
	return m
}

// Watch makes the collector export s's statistics. Call it once the server
// exists; a later call replaces the server watched.
func (m *Metrics) Watch(s *sipws.Server) { m.srv.Store(s) }

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, st := range m.stats {
		ch <- st.desc
	}
	m.handshake.Describe(ch)
	m.size.Describe(ch)
	m.rtt.Describe(ch)
	m.closes.Describe(ch)
}

// Collect implements prometheus.Collector. The statistics come from one
// Server.Stats snapshot.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	if s := m.srv.Load(); s != nil {
		i := 0
		for name, v := range s.Stats().All() {
			if i < len(m.stats) && m.stats[i].name == name {
				ch <- prometheus.MustNewConstMetric(m.stats[i].desc, m.stats[i].typ, float64(v))
			}
			i++
		}
	}
	m.handshake.Collect(ch)
	m.size.Collect(ch)
	m.rtt.Collect(ch)
	m.closes.Collect(ch)
}

// Handshake implements sipws.Observer.
func (m *Metrics) Handshake(status int, d time.Duration) {
	class := status / 100
	switch {
	case class >= 0 && class < len(m.hsByClass) && m.hsByClass[class] != nil:
		m.hsByClass[class].Observe(d.Seconds())
	case class >= 1 && class <= 5:
		m.handshake.WithLabelValues(strconv.Itoa(class) + "xx").Observe(d.Seconds())
	default:
		m.handshake.WithLabelValues("other").Observe(d.Seconds())
	}
}

// MessageReceived implements sipws.Observer.
func (m *Metrics) MessageReceived(sp sipws.Subprotocol, size int) { m.observeSize(0, sp, size) }

// MessageSent implements sipws.Observer.
func (m *Metrics) MessageSent(sp sipws.Subprotocol, size int) { m.observeSize(1, sp, size) }

// observeSize records the size of a message received (d 0) or sent (d 1).
func (m *Metrics) observeSize(d int, sp sipws.Subprotocol, size int) {
	s := 0
	if sp == sipws.MSRP {
		s = 1
	}
	m.sizeBy[d][s].Observe(float64(size))
}

// RTT implements sipws.Observer.
func (m *Metrics) RTT(d time.Duration) { m.rtt.Observe(d.Seconds()) }

// Closed implements sipws.Observer.
func (m *Metrics) Closed(code sipws.CloseCode, cause sipws.CloseCause) {
	m.closes.WithLabelValues(codeLabel(code), cause.String()).Inc()
}

// codeLabel bounds the values of the code label.
func codeLabel(c sipws.CloseCode) string {
	switch {
	case c >= 1000 && c <= 1015:
		return strconv.Itoa(int(c))
	case c >= 3000 && c <= 3999:
		return "3xxx"
	case c >= 4000 && c <= 4999:
		return "4xxx"
	}
	return "other"
}

// statHelp describes a statistic from its Kamailio name.
func statHelp(name string) string {
	base, scope := strings.TrimPrefix(name, "ws_"), ""
	for _, sp := range []string{"sip", "msrp"} {
		if rest, ok := strings.CutPrefix(base, sp+"_"); ok {
			base, scope = rest, sp
		}
	}
	text := map[string]string{
		"current_connections":        "WebSocket connections open now",
		"max_concurrent_connections": "Most WebSocket connections open at once",
		"failed_connections":         "Connections that ended abnormally",
		"local_closed_connections":   "Connections ended by this side",
		"remote_closed_connections":  "Connections ended by the peer",
		"received_frames":            "Frames received, control frames included",
		"transmitted_frames":         "Frames sent, control frames included",
		"successful_handshakes":      "Handshakes accepted",
		"failed_handshakes":          "Handshakes refused or failed",
	}[base]
	if text == "" {
		text = "Statistic"
	}
	if scope != "" {
		text = strings.Replace(text, ", control frames included", " (data frames)", 1)
		text += " (" + scope + " sub-protocol)"
	}
	return text + " (Kamailio websocket:" + name + ")."
}
