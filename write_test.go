package sipws_test

// Write-path tests (write.go): what the server sends — Send, SendMessage,
// Ping, Pong and the answers to Pings — as a raw client reads it.

import (
	"fmt"
	"runtime"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestFrameServerSendPicksType(t *testing.T) {
	ts := startServer(t, sipws.Config{MaxMessageSize: 1 << 20})
	c, conn := frDial(t, ts)
	cases := []struct {
		data []byte
		op   byte
	}{
		{[]byte("SIP/2.0 200 OK\r\n\r\n"), frOpText},
		{[]byte{}, frOpText},
		{[]byte("héllo €"), frOpText},
		{[]byte{0xff, 0xfe, 0xfd}, frOpBinary},
		{[]byte("ok\xc0"), frOpBinary},
		{[]byte("\xed\xa0\x80"), frOpBinary},
		{frText(125, 1), frOpText},
		{frText(126, 1), frOpText},
		{frBin(65535, 1), frOpBinary},
		{frText(65536, 2), frOpText},
		{frBin(100000, 3), frOpBinary},
	}
	for _, tc := range cases {
		require.NoError(t, conn.Send(tc.data))
	}
	for i, tc := range cases {
		f := frReadMinimal(t, c)
		frServerFrame(t, f)
		assert.Equal(t, tc.op, f.Op, "frame %d", i)
		frEqualBytes(t, tc.data, f.Payload, fmt.Sprintf("frame %d", i))
	}
	// SendMessage keeps the type it is given, and refuses text that is not UTF-8.
	require.NoError(t, conn.SendMessage(sipws.MessageBinary, []byte("plain ascii")))
	f := c.mustReadFrame()
	frServerFrame(t, f)
	assert.Equal(t, frOpBinary, f.Op)
	assert.Equal(t, "plain ascii", string(f.Payload))
	assert.Error(t, conn.SendMessage(sipws.MessageText, []byte{0xff}))
}

// Sends from many goroutines at once go out as whole frames, each
// goroutine's in the order it sent them.
func TestFrameServerConcurrentSends(t *testing.T) {
	const senders, each = 16, 100
	ts := startServer(t, sipws.Config{SendQueueSize: 64 << 20})
	c, conn := frDial(t, ts)
	payload := func(g, seq int) []byte {
		head := fmt.Appendf(nil, "g%02d s%03d ", g, seq)
		if seq%4 == 3 {
			return append(head, frBin((g*31+seq*17)%3000, seq)...)
		}
		return append(head, frText((g*31+seq*17)%3000, seq)...)
	}
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		concurrently(senders, func(g int) {
			for seq := range each {
				if !assert.NoError(t, conn.Send(payload(g, seq))) {
					return
				}
				if seq%10 == 0 {
					assert.NoError(t, conn.Ping(fmt.Appendf(nil, "g%02d", g)))
				}
			}
		})
	}()
	defer func() { <-sent }()
	next := make([]int, senders)
	pings := 0
	for n := 0; n < senders*each; {
		f := c.mustReadFrame()
		frServerFrame(t, f)
		if f.Op == frOpPing {
			pings++
			continue
		}
		var g, seq int
		_, err := fmt.Sscanf(string(f.Payload), "g%02d s%03d ", &g, &seq)
		require.NoError(t, err, "frame %d: %.20q", n, f.Payload)
		require.Equal(t, next[g], seq, "sender %d out of order", g)
		next[g]++
		want := payload(g, seq)
		frEqualBytes(t, want, f.Payload, fmt.Sprintf("sender %d message %d", g, seq))
		wantOp := frOpText
		if !utf8.Valid(want) {
			wantOp = frOpBinary
		}
		require.Equal(t, wantOp, f.Op, "sender %d message %d", g, seq)
		n++
	}
	assert.Equal(t, senders*each/10, pings)
}

// TestFrameServerSendWhileSocketFull sends while the peer reads nothing: the
// socket fills, a frame goes out in part and its rest waits in the queue
// with every frame after it. What waits must be the server's own copy — not
// the pooled block the next frame is built in, nor the caller's buffer, which
// Send lets it reuse at once — so every message arrives whole, in order.
func TestFrameServerSendWhileSocketFull(t *testing.T) {
	// 1,400 messages of 7,000 bytes: 9.8 MB, past what the socket buffers
	// take (Linux lets a send buffer grow to 4 MiB by default).
	const msgs = 1400
	ts := startServer(t, sipws.Config{SendQueueSize: 64 << 20})
	c, conn := frDial(t, ts)
	want := func(i int) []byte {
		b := make([]byte, 7000)
		for j := range b {
			b[j] = byte('a' + (i*7+j)%26)
		}
		return fmt.Appendf(b[:0], "%04d", i)[:7000]
	}
	buf := make([]byte, 7000)
	for i := range msgs {
		copy(buf, want(i))
		require.NoError(t, conn.Send(buf))
	}
	for i := range msgs {
		f := c.mustReadFrame()
		frServerFrame(t, f)
		require.Equal(t, frOpText, f.Op, "message %d", i)
		frEqualBytes(t, want(i), f.Payload, fmt.Sprintf("message %d", i))
	}
}

func TestFrameServerControlFrames(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c, conn := frDial(t, ts)
	assert.ErrorIs(t, conn.Ping(make([]byte, 126)), sipws.ErrControlTooLong)
	assert.ErrorIs(t, conn.Pong(make([]byte, 126)), sipws.ErrControlTooLong)
	assert.ErrorIs(t, conn.Ping(make([]byte, 1000)), sipws.ErrControlTooLong)

	p := frBin(125, 9)
	require.NoError(t, conn.Ping(p))
	require.NoError(t, conn.Pong([]byte("hb")))
	require.NoError(t, conn.Ping(nil))
	want := []struct {
		op byte
		p  []byte
	}{{frOpPing, p}, {frOpPong, []byte("hb")}, {frOpPing, nil}}
	for i, w := range want {
		f := frReadMinimal(t, c)
		frServerFrame(t, f)
		assert.Equal(t, w.op, f.Op, "frame %d", i)
		frEqualBytes(t, w.p, f.Payload, fmt.Sprintf("frame %d", i))
	}
}

// A client that sends Pings and never reads must not make the server hold
// an unbounded queue of Pongs: memory per connection stays bounded (by
// SendQueueSize, by answering only the latest Ping as §5.5.3 allows, by not
// reading while Pongs are stuck, or by closing the connection).
func TestFramePingFloodWithoutReadingIsBounded(t *testing.T) {
	const flood = 40 << 20
	ts := startServer(t, sipws.Config{SendQueueSize: 1 << 20})
	c, _ := frDial(t, ts)
	var chunk []byte
	for range 1000 {
		chunk = append(chunk, frMasked(true, frOpPing, frBin(125, 1))...)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	sent := 0
	for stop := time.Now().Add(5 * time.Second); sent < flood && time.Now().Before(stop); {
		_ = c.conn.SetWriteDeadline(time.Now().Add(time.Second))
		n, err := c.conn.Write(chunk)
		sent += n
		if err != nil {
			break // backpressure or closed: both fine
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("sent %d MiB of Pings; live heap grew by %d MiB", sent>>20, grown>>20)
	assert.Less(t, grown, int64(16<<20), "live heap held for one connection that does not read")
}
