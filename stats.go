package sipws

import (
	"iter"
	"sync/atomic"
)

// Stats is a snapshot of the server's counters: Kamailio's websocket module
// statistics, with the same meaning. Per-sub-protocol counters split the
// connection counters exactly (ws_current_connections =
// ws_sip_current_connections + ws_msrp_current_connections, and so on), except
// frames: ReceivedFrames and TransmittedFrames count every frame, control
// frames included, while the per-sub-protocol ones count data frames only, as
// in Kamailio.
//
// Every connection that completed its handshake is counted, when it ends, in
// exactly one of LocalClosedConnections and RemoteClosedConnections (see
// CloseCause.Local), and also in FailedConnections when it ended abnormally:
// when its CloseEvent.Err is not nil (every end by a failure cause, a close
// handshake of ours that got no reply, a panic in a hook). So CurrentConnections = SuccessfulHandshakes -
// LocalClosedConnections - RemoteClosedConnections, and it equals
// Registry.Len() whenever no connection is between its handshake and its
// registration or between its end and its removal.
type Stats struct {
	CurrentConnections       uint64 // ws_current_connections
	MaxConcurrentConnections uint64 // ws_max_concurrent_connections
	FailedConnections        uint64 // ws_failed_connections
	LocalClosedConnections   uint64 // ws_local_closed_connections
	RemoteClosedConnections  uint64 // ws_remote_closed_connections
	ReceivedFrames           uint64 // ws_received_frames
	TransmittedFrames        uint64 // ws_transmitted_frames
	SuccessfulHandshakes     uint64 // ws_successful_handshakes
	FailedHandshakes         uint64 // ws_failed_handshakes

	SIP  SubprotocolStats // ws_sip_*
	MSRP SubprotocolStats // ws_msrp_*

	// InvalidMessages counts the messages that failed the framing check
	// (Config.Framing); Kamailio has no such counter, so List leaves it out.
	InvalidMessages uint64
	// PartialBytes is a gauge: the bytes held at this moment in messages
	// still being received, against Config.MaxPartialBytes. Kamailio has no
	// such statistic, so List leaves it out.
	PartialBytes uint64
}

// SubprotocolStats are the counters of one sub-protocol.
type SubprotocolStats struct {
	CurrentConnections       uint64 // ws_<sp>_current_connections
	MaxConcurrentConnections uint64 // ws_<sp>_max_concurrent_connections
	FailedConnections        uint64 // ws_<sp>_failed_connections
	LocalClosedConnections   uint64 // ws_<sp>_local_closed_connections
	RemoteClosedConnections  uint64 // ws_<sp>_remote_closed_connections
	ReceivedFrames           uint64 // ws_<sp>_received_frames (data frames)
	TransmittedFrames        uint64 // ws_<sp>_transmitted_frames (data frames)
	SuccessfulHandshakes     uint64 // ws_<sp>_successful_handshakes
}

// stat is one statistic with its Kamailio name.
type stat struct {
	Name  string
	Value uint64
}

// All yields every statistic with its Kamailio name (without the
// "websocket:" group prefix, e.g. "ws_current_connections") and its value,
// in the order "kamcmd stats.get_statistics websocket:" prints them (sorted
// by name).
func (s Stats) All() iter.Seq2[string, uint64] {
	return func(yield func(string, uint64) bool) {
		for _, st := range s.list() {
			if !yield(st.Name, st.Value) {
				return
			}
		}
	}
}

// list is All as a slice.
func (s Stats) list() []stat {
	return []stat{
		{"ws_current_connections", s.CurrentConnections},
		{"ws_failed_connections", s.FailedConnections},
		{"ws_failed_handshakes", s.FailedHandshakes},
		{"ws_local_closed_connections", s.LocalClosedConnections},
		{"ws_max_concurrent_connections", s.MaxConcurrentConnections},
		{"ws_msrp_current_connections", s.MSRP.CurrentConnections},
		{"ws_msrp_failed_connections", s.MSRP.FailedConnections},
		{"ws_msrp_local_closed_connections", s.MSRP.LocalClosedConnections},
		{"ws_msrp_max_concurrent_connections", s.MSRP.MaxConcurrentConnections},
		{"ws_msrp_received_frames", s.MSRP.ReceivedFrames},
		{"ws_msrp_remote_closed_connections", s.MSRP.RemoteClosedConnections},
		{"ws_msrp_successful_handshakes", s.MSRP.SuccessfulHandshakes},
		{"ws_msrp_transmitted_frames", s.MSRP.TransmittedFrames},
		{"ws_received_frames", s.ReceivedFrames},
		{"ws_remote_closed_connections", s.RemoteClosedConnections},
		{"ws_sip_current_connections", s.SIP.CurrentConnections},
		{"ws_sip_failed_connections", s.SIP.FailedConnections},
		{"ws_sip_local_closed_connections", s.SIP.LocalClosedConnections},
		{"ws_sip_max_concurrent_connections", s.SIP.MaxConcurrentConnections},
		{"ws_sip_received_frames", s.SIP.ReceivedFrames},
		{"ws_sip_remote_closed_connections", s.SIP.RemoteClosedConnections},
		{"ws_sip_successful_handshakes", s.SIP.SuccessfulHandshakes},
		{"ws_sip_transmitted_frames", s.SIP.TransmittedFrames},
		{"ws_successful_handshakes", s.SuccessfulHandshakes},
		{"ws_transmitted_frames", s.TransmittedFrames},
	}
}

// counters are the live atomic counters behind Stats.
type counters struct {
	current       atomic.Int64
	maxConcurrent atomic.Uint64
	rxFrames      atomic.Uint64
	txFrames      atomic.Uint64
	failedHS      atomic.Uint64
	invalid       atomic.Uint64
	partial       atomic.Int64 // bytes in partial messages (a gauge kept by partialBudget)
	sp            [2]spCounters
}

type spCounters struct {
	current       atomic.Int64
	maxConcurrent atomic.Uint64
	failed        atomic.Uint64
	localClosed   atomic.Uint64
	remoteClosed  atomic.Uint64
	rxFrames      atomic.Uint64
	txFrames      atomic.Uint64
	handshakes    atomic.Uint64
}

func raiseMax(m *atomic.Uint64, v int64) {
	for {
		old := m.Load()
		if v <= int64(old) || m.CompareAndSwap(old, uint64(v)) {
			return
		}
	}
}

// opened counts a successful handshake and the connection it made.
func (c *counters) opened(sp Subprotocol) {
	s := &c.sp[sp.index()]
	s.handshakes.Add(1)
	raiseMax(&s.maxConcurrent, s.current.Add(1))
	raiseMax(&c.maxConcurrent, c.current.Add(1))
}

// closed counts the end of a connection.
func (c *counters) closed(sp Subprotocol, by CloseCause, failed bool) {
	s := &c.sp[sp.index()]
	if failed {
		s.failed.Add(1)
	}
	if by.Local() {
		s.localClosed.Add(1)
	} else {
		s.remoteClosed.Add(1)
	}
	s.current.Add(-1)
	c.current.Add(-1)
}

func (c *counters) countRx(sp Subprotocol, data bool) {
	c.rxFrames.Add(1)
	if data {
		c.sp[sp.index()].rxFrames.Add(1)
	}
}

func (c *counters) countTx(sp Subprotocol, all, data uint64) {
	c.txFrames.Add(all)
	if data != 0 {
		c.sp[sp.index()].txFrames.Add(data)
	}
}

func (s *spCounters) snapshot() SubprotocolStats {
	return SubprotocolStats{
		CurrentConnections:       uint64(max(s.current.Load(), 0)),
		MaxConcurrentConnections: s.maxConcurrent.Load(),
		FailedConnections:        s.failed.Load(),
		LocalClosedConnections:   s.localClosed.Load(),
		RemoteClosedConnections:  s.remoteClosed.Load(),
		ReceivedFrames:           s.rxFrames.Load(),
		TransmittedFrames:        s.txFrames.Load(),
		SuccessfulHandshakes:     s.handshakes.Load(),
	}
}

func (c *counters) snapshot() Stats {
	st := Stats{
		CurrentConnections:       uint64(max(c.current.Load(), 0)),
		MaxConcurrentConnections: c.maxConcurrent.Load(),
		ReceivedFrames:           c.rxFrames.Load(),
		TransmittedFrames:        c.txFrames.Load(),
		FailedHandshakes:         c.failedHS.Load(),
		InvalidMessages:          c.invalid.Load(),
		PartialBytes:             uint64(max(c.partial.Load(), 0)),
		SIP:                      c.sp[0].snapshot(),
		MSRP:                     c.sp[1].snapshot(),
	}
	st.FailedConnections = st.SIP.FailedConnections + st.MSRP.FailedConnections
	st.LocalClosedConnections = st.SIP.LocalClosedConnections + st.MSRP.LocalClosedConnections
	st.RemoteClosedConnections = st.SIP.RemoteClosedConnections + st.MSRP.RemoteClosedConnections
	st.SuccessfulHandshakes = st.SIP.SuccessfulHandshakes + st.MSRP.SuccessfulHandshakes
	return st
}
