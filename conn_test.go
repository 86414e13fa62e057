package sipws_test

import (
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEchoRoundTrip(t *testing.T) {
	ts := startServer(t, sipws.Config{OnMessage: func(c *sipws.Conn, m sipws.Message) {
		_ = c.SendMessage(m.Type, m.Data)
	}})
	c := dialWS(t, ts.Addr, "sip")
	conn := ts.nextOpened(t)
	assert.Equal(t, sipws.SIP, conn.Subprotocol())
	c.sendText("OPTIONS sip:a@b SIP/2.0\r\n\r\n")
	m := ts.nextMsg(t)
	assert.Equal(t, sipws.MessageText, m.Msg.Type)
	f := c.mustReadFrame()
	assert.Equal(t, byte(0x1), f.Op)
	assert.Equal(t, "OPTIONS sip:a@b SIP/2.0\r\n\r\n", string(f.Payload))
	c.sendClose(1000, "bye")
	c.expectClose(1000, time.Second)
	ev := ts.nextClosed(t)
	assert.Equal(t, sipws.CausePeer, ev.Cause)
	assert.Equal(t, sipws.CloseCode(1000), ev.Code)
	assert.Equal(t, "bye", ev.Reason)
	require.Equal(t, 0, ts.Registry().Len())
}
