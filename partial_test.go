package sipws_test

// Memory a peer can pin with messages it does not finish: MessageTimeout,
// the server-wide budget MaxPartialBytes, and buffers that grow with the
// bytes that arrive rather than with the length a header declares.

import (
	"bytes"
	"runtime"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// ptExpectClosedBy reads the server's close frame on c and checks its code
// and reason, and that OnClosed names the initiator and the same code.
func ptExpectClosedBy(t *testing.T, ts *testServer, c *rawClient, code uint16, reason string, by sipws.CloseCause) {
	t.Helper()
	f := c.expectClose(code, ioTimeout)
	_, got := f.closeCode()
	assert.Equal(t, reason, got, "close reason")
	ev := ts.nextClosed(t)
	assert.Equal(t, by, ev.Cause, "Initiator (%s)", ev.Cause)
	assert.Equal(t, sipws.CloseCode(code), ev.Code)
	assert.Equal(t, sipws.CloseCode(code), sipws.CloseStatus(ev.Err), "Closed.Err %v", ev.Err)
}

// A message whose first fragment came and whose last never comes is failed
// with 1008 once MessageTimeout has passed since its first frame, however
// the peer keeps the connection busy meanwhile: silence, Pings, or more
// fragments, each of them a whole frame (FrameTimeout never fires).
func TestMessageTimeout(t *testing.T) {
	const fragments = 3
	ts := startServer(t, sipws.Config{FrameTimeout: 100 * time.Millisecond, MessageTimeout: 300 * time.Millisecond})
	silent := make([]*rawClient, fragments)
	for i := range silent {
		silent[i], _ = frDial(t, ts)
		silent[i].writeRaw(frMasked(false, frOpBinary, frBin(1000, i)))
	}
	pinging, _ := frDial(t, ts)
	pinging.writeRaw(frMasked(false, frOpText, []byte("INVITE sip:bob@example.com SIP/2.0\r\n")))
	trickling, _ := frDial(t, ts)
	trickling.writeRaw(frMasked(false, frOpText, []byte("INVITE sip:bob@example.com SIP/2.0\r\n")))
	healthy, _ := frDial(t, ts)

	// Keep the last two busy until they are closed.
	stop := make(chan struct{})
	busy := make(chan struct{})
	go func() {
		defer close(busy)
		tick := time.NewTicker(30 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			_ = pinging.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
			_, _ = pinging.conn.Write(frMasked(true, frOpPing, []byte("still here")))
			_ = trickling.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
			_, _ = trickling.conn.Write(frMasked(false, frOpCont, []byte("X-Padding: x\r\n")))
		}
	}()
	defer func() { close(stop); <-busy }()

	for _, c := range append(silent, pinging, trickling) {
		f := c.expectClose(1008, ioTimeout)
		_, reason := f.closeCode()
		assert.Equal(t, "message not finished in time", reason)
	}
	for range fragments + 2 {
		ev := ts.nextClosed(t)
		assert.Equal(t, sipws.CauseMessageTimeout, ev.Cause, "Initiator (%s)", ev.Cause)
		assert.Equal(t, sipws.ClosePolicyViolation, ev.Code)
		assert.Equal(t, sipws.ClosePolicyViolation, sipws.CloseStatus(ev.Err), "Closed.Err %v", ev.Err)
	}
	assert.Zero(t, len(ts.Msgs), "no unfinished message may be delivered")

	// A message in fragments that ends in time is delivered, and the
	// connection may then idle past MessageTimeout: the deadline is gone.
	healthy.writeRaw(frMasked(false, frOpText, []byte("first half, ")))
	healthy.writeRaw(frMasked(true, frOpCont, []byte("second half")))
	assert.Equal(t, "first half, second half", string(ts.nextMsg(t).Msg.Data))
	time.Sleep(500 * time.Millisecond)
	healthy.sendText("after idle")
	assert.Equal(t, "after idle", string(ts.nextMsg(t).Msg.Data))
	assert.Zero(t, len(ts.Closed), "the healthy connection must stay open")
}

// ptWaitHeld waits until the server holds at least n bytes in partial
// messages.
func ptWaitHeld(t *testing.T, ts *testServer, n uint64) {
	t.Helper()
	require.Eventually(t, func() bool { return ts.Stats().PartialBytes >= n }, ioTimeout, time.Millisecond,
		"the server holds %d bytes in partial messages, want at least %d", ts.Stats().PartialBytes, n)
}

// When partial messages would grow past MaxPartialBytes, the connection
// holding the most is failed with 1009, and the others, however small, keep
// receiving and deliver their messages.
func TestPartialBytesBudgetClosesLargestHolder(t *testing.T) {
	const kib = 1 << 10
	ts := startServer(t, sipws.Config{MaxMessageSize: 64 * kib, MaxPartialBytes: 128 * kib})

	bigHog, _ := frDial(t, ts)
	bigHog.writeRaw(frMasked(false, frOpBinary, frBin(60*kib, 1)))
	ptWaitHeld(t, ts, 60*kib)
	hog, _ := frDial(t, ts)
	hog.writeRaw(frMasked(false, frOpBinary, frBin(40*kib, 2)))
	ptWaitHeld(t, ts, 100*kib)
	small, _ := frDial(t, ts)
	small.writeRaw(frMasked(false, frOpText, []byte("OPTIONS sip:a@b SIP/2.0\r\n")))

	// A third message past the budget: the biggest hog goes, not the
	// one that grows.
	grower, _ := frDial(t, ts)
	grower.writeRaw(frMasked(false, frOpBinary, frBin(30*kib, 3)))
	ptExpectClosedBy(t, ts, bigHog, 1009, "server out of memory for partial messages", sipws.CausePartialBytes)

	// Everyone else finishes their message.
	small.writeRaw(frMasked(true, frOpCont, []byte("\r\n")))
	assert.Equal(t, "OPTIONS sip:a@b SIP/2.0\r\n\r\n", string(ts.nextMsg(t).Msg.Data))
	hog.writeRaw(frMasked(true, frOpCont, []byte("end")))
	assert.Len(t, ts.nextMsg(t).Msg.Data, 40*kib+3)
	grower.writeRaw(frMasked(true, frOpCont, []byte("end")))
	assert.Len(t, ts.nextMsg(t).Msg.Data, 30*kib+3)
	small.sendText("still open")
	assert.Equal(t, "still open", string(ts.nextMsg(t).Msg.Data))
	assert.Zero(t, len(ts.Closed), "only the biggest hog may be closed")
	assert.Zero(t, ts.Stats().PartialBytes, "nothing is held once every message is delivered")
}

// A hog stalled in the middle of a frame is woken and failed at once when
// the budget dooms it: it does not wait for FrameTimeout.
func TestPartialBytesBudgetWakesHogInsideFrame(t *testing.T) {
	const kib = 1 << 10
	ts := startServer(t, sipws.Config{MaxMessageSize: 64 * kib, MaxPartialBytes: 64 * kib, FrameTimeout: time.Hour, MessageTimeout: time.Hour})
	hog, _ := frDial(t, ts)
	f := frMasked(true, frOpBinary, frBin(60*kib, 1))
	hog.writeRaw(f[:len(f)-10*kib]) // 50 KiB of a 60 KiB frame, then silence
	ptWaitHeld(t, ts, 50*kib)
	other, _ := frDial(t, ts)
	other.writeRaw(frMasked(true, frOpBinary, frBin(20*kib, 2)))
	ptExpectClosedBy(t, ts, hog, 1009, "server out of memory for partial messages", sipws.CausePartialBytes)
	assert.Len(t, ts.nextMsg(t).Msg.Data, 20*kib)
	assert.Zero(t, len(ts.Closed))
	require.Eventually(t, func() bool { return ts.Stats().PartialBytes == 0 }, ioTimeout, time.Millisecond)
}

// A connection whose own growth passes the budget while it holds the most
// is the one failed; the smaller holders stay.
func TestPartialBytesBudgetClosesGrowerWhenLargest(t *testing.T) {
	const kib = 1 << 10
	ts := startServer(t, sipws.Config{MaxMessageSize: 64 * kib, MaxPartialBytes: 90 * kib})
	var others []*rawClient
	for i := range 3 {
		c, _ := frDial(t, ts)
		c.writeRaw(frMasked(false, frOpBinary, frBin(10*kib, i)))
		ptWaitHeld(t, ts, uint64(i+1)*10*kib)
		others = append(others, c)
	}
	grower, _ := frDial(t, ts)
	grower.writeRaw(frMasked(false, frOpBinary, frBin(40*kib, 9)))
	ptWaitHeld(t, ts, 70*kib)
	grower.writeRaw(frMasked(false, frOpCont, frBin(24*kib, 9)))
	ptExpectClosedBy(t, ts, grower, 1009, "server out of memory for partial messages", sipws.CausePartialBytes)

	for i, c := range others {
		c.writeRaw(frMasked(true, frOpCont, []byte("end")))
		assert.Len(t, ts.nextMsg(t).Msg.Data, 10*kib+3, "message %d", i)
	}
	assert.Zero(t, len(ts.Closed))
	assert.Zero(t, ts.Stats().PartialBytes)
}

// A frame header costs next to nothing before its payload arrives, whatever
// length it declares: 100 connections each send a header declaring 16 KiB
// and 8 bytes of payload, and wait for FrameTimeout to fail them. They
// allocate about what 100 headers declaring 100 bytes do, not 16 KiB more
// each.
func TestFrameHeaderAloneAllocatesLittle(t *testing.T) {
	small := ptAllocPerStalledFrame(t, 100)
	large := ptAllocPerStalledFrame(t, 16<<10)
	t.Logf("bytes allocated per connection: %d for a header declaring 100 bytes, %d for one declaring 16 KiB", small, large)
	assert.Less(t, large-small, int64(4<<10), "bytes allocated per connection for the 16 KiB declared")
}

// ptAllocPerStalledFrame returns the bytes allocated per connection while
// 100 connections each send a binary frame header declaring n bytes, and 8
// of them, until FrameTimeout fails them.
func ptAllocPerStalledFrame(t *testing.T, n int) int64 {
	const conns = 100
	ts := startServer(t, sipws.Config{FrameTimeout: 200 * time.Millisecond, Keepalive: sipws.KeepaliveNone})
	clients := make([]*rawClient, conns)
	for i := range clients {
		clients[i], _ = frDial(t, ts)
	}
	frame := frMasked(true, frOpBinary, make([]byte, n))
	frame = frame[:len(frame)-n+8]

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for _, c := range clients {
		c.writeRaw(frame)
	}
	for range conns {
		ev := ts.nextClosed(t)
		require.Equal(t, sipws.ClosePolicyViolation, ev.Code, "FrameTimeout")
	}
	runtime.ReadMemStats(&after)
	return int64(after.TotalAlloc-before.TotalAlloc) / conns
}

// The budget must fit one message of the largest size, and MessageTimeout
// one frame.
func TestPartialConfigErrors(t *testing.T) {
	cases := []struct {
		name  string
		cfg   sipws.Config
		field string
	}{
		{"negative message timeout", sipws.Config{MessageTimeout: -1}, "MessageTimeout"},
		{"message timeout under the frame timeout", sipws.Config{MessageTimeout: 10 * time.Second}, "MessageTimeout"},
		{"message timeout under a set frame timeout", sipws.Config{FrameTimeout: time.Minute, MessageTimeout: 59 * time.Second}, "MessageTimeout"},
		{"negative budget", sipws.Config{MaxPartialBytes: -1}, "MaxPartialBytes"},
		{"budget under the message size", sipws.Config{MaxPartialBytes: sipws.DefaultMaxMessageSize - 1}, "MaxPartialBytes"},
		{"budget under a set message size", sipws.Config{MaxMessageSize: 1 << 20, MaxPartialBytes: 1<<20 - 1}, "MaxPartialBytes"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := sipws.New(tc.cfg)
			var ce *sipws.ConfigError
			require.ErrorAs(t, err, &ce)
			assert.Equal(t, tc.field, ce.Field, "error: %v", err)
		})
	}
	for _, cfg := range []sipws.Config{
		{FrameTimeout: 2 * time.Minute},                          // the default MessageTimeout follows it
		{FrameTimeout: time.Minute, MessageTimeout: time.Minute}, // equal is fine
		{MaxMessageSize: sipws.MaxMaxMessageSize},                // the default budget follows it
		{MaxPartialBytes: sipws.DefaultMaxMessageSize},
	} {
		_, err := sipws.New(cfg)
		assert.NoError(t, err, "%+v", cfg)
	}
}

// The attack in small, as a report: connections each send the first
// fragment of a large message and go silent. It reports the heap in use
// while they hold their fragments (MiB-held, and MiB-partial as
// Stats.PartialBytes counts it) and once MessageTimeout or the budget has
// closed them all (MiB-after-close), against the heap before.
func BenchmarkPartialMessagesPinned(b *testing.B) {
	const conns, fragment, budget = 8, 8 << 20, 16 << 20
	for b.Loop() {
		ts := startServer(b, sipws.Config{
			MaxMessageSize:  budget,
			MaxPartialBytes: budget,
			MessageTimeout:  time.Second,
			FrameTimeout:    time.Second,
			Keepalive:       sipws.KeepaliveNone,
		})
		clients := make([]*rawClient, conns)
		for i := range clients {
			clients[i] = dialWS(b, ts.Addr, "sip")
		}
		frame := encodeFrame(false, 0, 0x2, bytes.Repeat([]byte{'x'}, fragment), true)
		base := ptHeap()
		concurrently(conns, func(i int) {
			c := clients[i].conn
			_ = c.SetWriteDeadline(time.Now().Add(ioTimeout))
			_, _ = c.Write(frame) // a doomed connection may be reset
		})
		time.Sleep(50 * time.Millisecond) // let the server read what is in the sockets
		held, partial := ptHeap(), ts.Stats().PartialBytes
		for range conns {
			<-ts.Closed
		}
		after := ptHeap()
		runtime.KeepAlive(frame)
		mib := func(n int64) float64 { return float64(n) / (1 << 20) }
		b.ReportMetric(mib(held-base), "MiB-held")
		b.ReportMetric(mib(int64(partial)), "MiB-partial")
		b.ReportMetric(mib(after-base), "MiB-after-close")
	}
}

// ptHeap returns the bytes of live heap after a collection.
func ptHeap() int64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
