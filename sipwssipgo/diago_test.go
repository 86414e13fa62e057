package sipwssipgo_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/diago"
	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
	"github.com/sipws/sipws"
	"github.com/sipws/sipws/sipwssipgo"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// diagoCall is what a diago handler saw of one incoming call.
type diagoCall struct {
	dialog *diago.DialogServerSession
	conn   *sipws.Conn // Bridge.Conn of the INVITE
	rtp    int         // diago's RTP port
	err    error       // from Answer or the audio write
}

// diagoEnd is how a diago handler's call ended.
type diagoEnd struct {
	by  string // "dialog", "connection" or "hangup"
	err error  // Hangup's, when by is "hangup"
}

// diagoRig is a rig whose sipgo Server is driven by diago.
type diagoRig struct {
	*rig
	dg     *diago.Diago
	calls  chan diagoCall
	ended  chan diagoEnd
	logged chan error // errors diago logs, as they come
	via    string     // the browser's Via transport: WS or WSS
}

// newDiagoRig wires diago through the bridge. Its handler answers every
// call, sends one 20 ms PCMU packet and reports the call on calls; then it
// hangs up itself when hangup is set, or else waits for the dialog's context
// or for the browser's connection to end, whichever is first. It reports
// how on ended and returns, which ends the call in diago.
func newDiagoRig(t *testing.T, secure, hangup bool) *diagoRig {
	t.Helper()
	d := &diagoRig{
		calls:  make(chan diagoCall, 1),
		ended:  make(chan diagoEnd, 1),
		logged: make(chan error, 16),
		via:    "WS",
	}
	if secure {
		d.via = "WSS"
	}
	d.rig = newRig(t, secure, sipws.Config{}, func(r *rig) {
		d.dg = diago.NewDiago(r.ua,
			diago.WithServer(r.srv),
			diago.WithLogger(slog.New(errorTap(d.logged))),
			// The transports diago looks up by the INVITE's label (WS,
			// WSS); without one diago's INVITE handler dereferences nil.
			// They are never served (no Serve call), so BindHost only
			// says where media binds (loopback, ephemeral ports) and what
			// diago's Contact and SDP say. RewriteContact sends in-dialog
			// requests to the INVITE's source — the bridge's address of
			// the browser's connection — instead of resolving the
			// browser's ".invalid" Contact (a DNS query, then nowhere).
			diago.WithTransport(diago.Transport{
				Transport:      "ws",
				BindHost:       "127.0.0.1",
				RewriteContact: true,
			}),
			diago.WithTransport(diago.Transport{
				Transport:      "wss",
				BindHost:       "127.0.0.1",
				RewriteContact: true,
			}),
		)
		d.dg.HandleFunc(func(dlg *diago.DialogServerSession) {
			call := diagoCall{dialog: dlg}
			call.conn, _ = r.bridge.Conn(dlg.InviteRequest)
			med, err := dlg.Answer(diago.AnswerOptions{})
			if err == nil {
				call.rtp = med.MediaSession().Laddr.Port
				var w io.Writer
				if w, err = med.AudioWriter(); err == nil {
					_, err = w.Write(bytes.Repeat([]byte{0xff}, 160)) // 20 ms of µ-law silence
				}
			}
			call.err = err
			d.calls <- call
			switch {
			case err != nil || call.conn == nil:
				d.ended <- diagoEnd{by: "setup failed"}
			case hangup:
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				d.ended <- diagoEnd{by: "hangup", err: dlg.Hangup(ctx)}
			default:
				select {
				case <-dlg.Context().Done():
					d.ended <- diagoEnd{by: "dialog"}
				case <-call.conn.Done():
					d.ended <- diagoEnd{by: "connection"}
				}
			}
		})
	})
	return d
}

// end waits for the handler's report.
func (d *diagoRig) end() diagoEnd {
	d.t.Helper()
	select {
	case e := <-d.ended:
		return e
	case <-time.After(10 * time.Second):
		d.t.Fatal("diago's handler did not return")
		return diagoEnd{}
	}
}

// errorTap is a slog.Handler that passes on the error of each record that
// has one.
type errorTap chan<- error

func (errorTap) Enabled(context.Context, slog.Level) bool { return true }
func (e errorTap) WithAttrs([]slog.Attr) slog.Handler     { return e }
func (e errorTap) WithGroup(string) slog.Handler          { return e }
func (e errorTap) Handle(_ context.Context, rec slog.Record) error {
	rec.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok {
			select {
			case e <- err:
			default:
			}
		}
		return true
	})
	return nil
}

// rtpPeer is the browser's media end: a UDP socket on loopback.
func rtpPeer(t *testing.T) *net.UDPConn {
	t.Helper()
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	t.Cleanup(func() { _ = pc.Close() })
	return pc
}

// offer is a minimal SDP offer: one audio stream, PCMU, RTP on port.
func offer(port int) string {
	return "v=0\r\n" +
		"o=- 1 1 IN IP4 127.0.0.1\r\n" +
		"s=-\r\n" +
		"c=IN IP4 127.0.0.1\r\n" +
		"t=0 0\r\n" +
		"m=audio " + strconv.Itoa(port) + " RTP/AVP 0\r\n" +
		"a=rtpmap:0 PCMU/8000\r\n" +
		"a=sendrecv\r\n"
}

// inDialog is a request from the browser as JsSIP writes it: Via and
// Contact on a ".invalid" host, Via transport WS or WSS, Contact transport
// ws.
func (d *diagoRig) inDialog(method, ruri, callID, fromTag, toTag string, cseq int, body string) string {
	to := "<sip:diago@proxy.test>"
	if toTag != "" {
		to += ";tag=" + toTag
	}
	ctype := ""
	if body != "" {
		ctype = "Content-Type: application/sdp\r\n"
	}
	return fmt.Sprintf("%s %s SIP/2.0\r\n"+
		"Via: SIP/2.0/%s df7jal23ls0d.invalid;branch=z9hG4bK%s%d%s;rport\r\n"+
		"Max-Forwards: 70\r\n"+
		"To: %s\r\n"+
		"From: <sip:alice@proxy.test>;tag=%s\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: %d %s\r\n"+
		"Contact: <sip:alice@df7jal23ls0d.invalid;transport=ws;ob>\r\n"+
		"%sContent-Length: %d\r\n\r\n%s",
		method, ruri, d.via, method, cseq, callID, to, fromTag, callID, cseq, method, ctype, len(body), body)
}

// await reads messages until one satisfies ok (skipping, say, a 200 for the
// INVITE that sipgo retransmits before the ACK arrived) and parses it; the
// browser's read deadline bounds it.
func (b *browser) await(ok func(*sip.Response) bool) *sip.Response {
	b.t.Helper()
	for range 20 {
		s, _ := b.read()
		m, err := sip.ParseMessage([]byte(s))
		require.NoError(b.t, err, s)
		if res, isRes := m.(*sip.Response); isRes && ok(res) {
			return res
		}
	}
	b.t.Fatal("no matching message among 20")
	return nil
}

func finalFor(method sip.RequestMethod) func(*sip.Response) bool {
	return func(res *sip.Response) bool {
		return res.CSeq().MethodName == method && !res.IsProvisional()
	}
}

// dialogUp sends the INVITE with an offer for rtp's port, checks diago's
// 200 and its SDP answer, sends the ACK and checks that diago's RTP packet
// reaches rtp from loopback. It returns the To tag and the call diago saw.
func dialogUp(t *testing.T, d *diagoRig, b *browser, rtp *net.UDPConn, callID string) (string, diagoCall) {
	t.Helper()
	port := rtp.LocalAddr().(*net.UDPAddr).Port
	b.send(ws.OpText, d.inDialog("INVITE", "sip:diago@proxy.test", callID, "ft1", "", 1, offer(port)))
	ok := b.await(finalFor(sip.INVITE))
	require.Equal(t, 200, int(ok.StatusCode), ok.String())
	toTag, _ := ok.To().Params.Get("tag")
	require.NotEmpty(t, toTag)
	require.NotNil(t, ok.ContentType())
	assert.Equal(t, "application/sdp", ok.ContentType().Value())
	answer := string(ok.Body())
	assert.Contains(t, answer, "\r\nc=IN IP4 127.0.0.1\r\n", answer)
	require.NotNil(t, ok.Contact())
	contact := ok.Contact().Address.String()

	b.send(ws.OpText, d.inDialog("ACK", contact, callID, "ft1", toTag, 1, ""))
	var call diagoCall
	select {
	case call = <-d.calls:
	case <-time.After(10 * time.Second):
		t.Fatal("diago's Answer did not return after the ACK")
	}
	require.NoError(t, call.err)
	require.NotNil(t, call.conn, "Bridge.Conn finds the INVITE's connection")
	assert.Contains(t, answer, fmt.Sprintf("\r\nm=audio %d RTP/AVP 0", call.rtp), answer)

	require.NoError(t, rtp.SetReadDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 1500)
	n, from, err := rtp.ReadFromUDP(buf)
	require.NoError(t, err)
	assert.Equal(t, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1).To4(), Port: call.rtp}, from, "RTP from the answer's address")
	require.Equal(t, 12+160, n, "one RTP header and 20 ms of PCMU")
	assert.Equal(t, byte(0), buf[1]&0x7f, "payload type PCMU")
	require.False(t, mediaClosed(t, call.rtp), "diago's RTP port is open during the call")
	return toTag, call
}

// mediaClosed reports whether nothing listens on diago's RTP port any more:
// a datagram to it draws ICMP port unreachable, which Linux reports on a
// connected UDP socket's next read as ECONNREFUSED.
func mediaClosed(t *testing.T, port int) bool {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	require.NoError(t, err)
	defer c.Close()
	if _, err := c.Write([]byte("probe")); err != nil {
		return errors.Is(err, syscall.ECONNREFUSED)
	}
	require.NoError(t, c.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	_, err = c.Read(make([]byte, 64))
	return errors.Is(err, syscall.ECONNREFUSED)
}

// diago, behind the bridge, answers a call from a browser (an INVITE with an
// SDP offer for PCMU on loopback): 200 with an SDP answer, media on
// loopback, and the browser's BYE gets its 200 and ends diago's dialog.
func TestDiagoAnswersBrowserCall(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("secure=%v", secure), func(t *testing.T) {
			d := newDiagoRig(t, secure, false)
			b := d.dial(nil)
			rtp := rtpPeer(t)
			const callID = "diago-call-1"
			toTag, call := dialogUp(t, d, b, rtp, callID)
			assert.Equal(t, d.via, call.dialog.Transport(), "diago saw the bridge's label")

			b.send(ws.OpText, d.inDialog("BYE", "sip:diago@127.0.0.1;transport=ws", callID, "ft1", toTag, 2, ""))
			res := b.await(finalFor(sip.BYE))
			assert.Equal(t, 200, int(res.StatusCode), res.String())
			assert.Equal(t, "dialog", d.end().by)
			assert.ErrorIs(t, call.dialog.Context().Err(), context.Canceled)
			require.Eventually(t, func() bool { return mediaClosed(t, call.rtp) }, 10*time.Second, 10*time.Millisecond)
		})
	}
}

// diago hangs up: its BYE reaches the browser on its WebSocket (diago's
// RewriteContact sends it to the bridge's address of the connection, not to
// the ".invalid" Contact), the browser's 200 ends the dialog.
func TestDiagoHangsUpBrowserCall(t *testing.T) {
	d := newDiagoRig(t, false, true)
	b := d.dial(nil)
	rtp := rtpPeer(t)
	const callID = "diago-call-3"
	_, call := dialogUp(t, d, b, rtp, callID)

	var bye *sip.Request
	for bye == nil {
		s, _ := b.read()
		m, err := sip.ParseMessage([]byte(s))
		require.NoError(t, err, s)
		if req, ok := m.(*sip.Request); ok {
			require.Equal(t, sip.BYE, req.Method, s)
			bye = req
		}
	}
	assert.Equal(t, callID, bye.CallID().Value())
	assert.Equal(t, "df7jal23ls0d.invalid", bye.Recipient.Host, "sent to the browser's Contact, on its connection")
	b.send(ws.OpText, sip.NewResponseFromRequest(bye, 200, "OK", nil).String())
	e := d.end()
	assert.Equal(t, "hangup", e.by)
	require.NoError(t, e.err)
	assert.ErrorIs(t, call.dialog.Context().Err(), context.Canceled)
	require.Eventually(t, func() bool { return mediaClosed(t, call.rtp) }, 10*time.Second, 10*time.Millisecond)
}

// The browser closes its WebSocket mid-call, without a BYE. sipgo ends a
// confirmed dialog only on a BYE (one received, or one sent and answered),
// so the dialog's context stays open: a handler learns of the end from the
// connection (Bridge.Conn of the INVITE, Done) and returns. diago then
// closes the media, forgets the dialog, and its hang-up BYE fails at once
// (no dial, no DNS lookup of ".invalid").
func TestDiagoBrowserClosesMidCall(t *testing.T) {
	d := newDiagoRig(t, false, false)
	b := d.dial(nil)
	rtp := rtpPeer(t)
	_, call := dialogUp(t, d, b, rtp, "diago-call-2")

	require.NoError(t, b.conn.Close())
	assert.Equal(t, "connection", d.end().by)
	require.Eventually(t, func() bool { return mediaClosed(t, call.rtp) }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		_, err := d.dg.DialogCacheServer().DialogLoad(context.Background(), call.dialog.ID)
		return err != nil
	}, 10*time.Second, 10*time.Millisecond)
	// sipws.ErrClosed if the BYE reached the bridge's connection before it
	// left sipgo's pool, ErrConnGone (the dial guard) after: either way it
	// failed at once, without a dial.
	timeout := time.After(10 * time.Second)
	for hungUp := false; !hungUp; {
		select {
		case err := <-d.logged:
			hungUp = errors.Is(err, sipwssipgo.ErrConnGone) || errors.Is(err, sipws.ErrClosed)
		case <-timeout:
			t.Fatal("diago did not report its failed hang-up")
		}
	}
}
