package sipws_test

import (
	"errors"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const fmOptions = "OPTIONS sip:bob@sipws.test SIP/2.0\r\n" +
	"Via: SIP/2.0/WS abc.invalid;branch=z9hG4bK1\r\n" +
	"To: <sip:bob@sipws.test>\r\n" +
	"From: <sip:alice@sipws.test>;tag=1\r\n" +
	"Call-ID: fm1\r\n" +
	"CSeq: 1 OPTIONS\r\n" +
	"Content-Length: 0\r\n\r\n"

type fmInvalid struct {
	conn *sipws.Conn
	msg  sipws.Message
	err  error
}

func TestFramingReport(t *testing.T) {
	invalid := make(chan fmInvalid, 16)
	ts := startServer(t, sipws.Config{
		Framing: sipws.FramingReport,
		OnInvalidMessage: func(c *sipws.Conn, m sipws.Message, err error) {
			invalid <- fmInvalid{c, m, err}
		},
	})
	c := dialWS(t, ts.Addr, "sip")
	ts.nextOpened(t)

	bad := []string{
		fmOptions + fmOptions, // two SIP messages in one WebSocket message
		"hello world\r\n\r\n", // not SIP
		"",                    // empty
		"MSRP a1 SEND\r\nTo-Path: msrp://h/s;ws\r\nFrom-Path: msrp://h/t;ws\r\n-------a1$\r\n", // MSRP on sip
	}
	for _, m := range bad {
		c.sendText(m)
		select {
		case iv := <-invalid:
			assert.Equal(t, m, string(iv.msg.Data))
			assert.True(t, errors.Is(iv.err, sipws.ErrFraming), "err %v", iv.err)
		case <-time.After(ioTimeout):
			t.Fatalf("OnInvalid not called for %q", m)
		}
	}
	// Nothing of it reached OnMessage, the connection lives on, and a good
	// message is delivered.
	c.sendText(fmOptions)
	assert.Equal(t, fmOptions, string(ts.nextMsg(t).Msg.Data))
	assert.Equal(t, uint64(len(bad)), ts.Stats().InvalidMessages)
	assert.Equal(t, 1, ts.Registry().Len())
}

func TestFramingClose(t *testing.T) {
	ts := startServer(t, sipws.Config{Framing: sipws.FramingClose, CloseTimeout: 300 * time.Millisecond})
	c := dialWS(t, ts.Addr, "msrp")
	ts.nextOpened(t)
	c.sendText(fmOptions) // SIP on an msrp connection
	f := c.mustReadFrame()
	require.Equal(t, byte(0x8), f.Op)
	code, _ := f.closeCode()
	assert.Equal(t, uint16(1007), code)
	c.sendText(fmOptions)
	c.sendClose(1007, "")
	c.expectEOF(time.Second)
	ev := ts.nextClosed(t)
	assert.Equal(t, sipws.CauseProtocolError, ev.Cause)
	assert.Equal(t, sipws.CloseInvalidPayload, ev.Code)
	assert.ErrorIs(t, ev.Err, sipws.ErrFraming)
	ts.noMsg(t, quiet)
}

func TestFramingOffDeliversAnything(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	c := dialWS(t, ts.Addr, "sip")
	ts.nextOpened(t)
	c.sendText(fmOptions + fmOptions)
	assert.Equal(t, fmOptions+fmOptions, string(ts.nextMsg(t).Msg.Data))
	assert.Zero(t, ts.Stats().InvalidMessages)
}
