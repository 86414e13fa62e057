package sipwssipgo_test

import (
	"net/http"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/sipws/sipws"
	"github.com/sipws/sipws/sipwssipgo"
)

// ExampleNew mounts sipws on a host's mux at /ws and hands its SIP to a sipgo
// Server; the host keeps all of sipws.Config. A registrar finds the
// connection of a REGISTER with Bridge.Conn, and sends a request to it later
// with Bridge.Route.
func ExampleNew() {
	ua, err := sipgo.NewUA(sipwssipgo.UserAgentOptions()...)
	if err != nil {
		panic(err)
	}
	defer ua.Close()
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		panic(err)
	}
	bridge, err := sipwssipgo.New(ua, sipwssipgo.Config{})
	if err != nil {
		panic(err)
	}
	defer bridge.Close() // before ua.Close

	srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
		if c, ok := bridge.Conn(req); ok {
			_ = c // bind req.To() to c (or to c.FlowToken())
		}
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})

	ws, err := sipws.New(sipws.Config{
		Subprotocols:   sipws.SIP,
		MaxMessageSize: sipwssipgo.MaxMessageSize(), // 1009 before sipgo would truncate
		OnMessage:      bridge.OnMessage,
		// CheckOrigin, Authorize, limits, keepalive, FlowTokens: the host's.
	})
	if err != nil {
		panic(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", ws)
	_ = mux // http.ListenAndServe(addr, mux); ws.Shutdown(ctx) before bridge.Close
}
