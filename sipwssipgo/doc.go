// Package sipwssipgo lets a github.com/emiago/sipgo UserAgent — and so a
// sipgo.Server, a sipgo.Client or diago built on them — handle SIP that
// arrives on sipws connections, while the host keeps all of sipws.Config
// (CheckOrigin, Authorize, limits, keepalive, flow tokens, RPC, metrics).
//
// sipgo's public API offers no way to hand it a parsed message, only
// listeners (sipgo.Server.ServeWS / ServeWSS). A Bridge therefore gives sipgo
// one in-memory listener per label (WS and WSS) and, for each sipws
// connection that sends SIP, an in-memory net.Conn on it: the net.Conn
// replays a fixed WebSocket upgrade, then presents each sipws message as one
// masked text frame (sipgo's reader ignores binary frames). sipgo runs its own
// read goroutine on it and parses, as it does for its own WebSocket listener.
//
// Writes do not go back through that net.Conn. As soon as sipgo has put the
// connection in its pool, the Bridge puts its own sip.Connection under the
// same key; sipgo's responses and requests then reach Conn.Send directly,
// in a text frame, or binary when the message is not valid UTF-8.
//
// Every connection gets its own address in sipgo's pool: a synthetic one in
// the IPv6 discard prefix 100::/64 (RFC 6666), unique for the Bridge's life.
// Two browsers that share an address (NAT, or Config.TrustedProxies with no
// port) therefore never share a pool entry, and nothing sipgo sends to one can
// reach the other. Bridge.Conn maps a message sipgo received back to its
// *sipws.Conn; Bridge.Route makes sipgo send a request on a given *sipws.Conn
// (one found by flow token, say) instead of resolving a ".invalid" Contact.
//
// When a sipws connection ends, its entry leaves sipgo's pool, sipgo's read
// goroutine ends, and the transaction layer is told
// (TransactionLayer.OnConnectionClose), which terminates that connection's
// transactions at once when the UserAgent was built with UserAgentOptions.
// Those options also make sipgo refuse to dial a synthetic address, so a
// request for a browser that has gone fails at once instead of dialling.
//
// Each message a sipgo parser accepts is at most MaxMessageSize bytes; the
// host sets sipws.Config.MaxMessageSize to it so that sipws refuses larger
// ones with 1009 before sipgo sees them.
//
// # Concurrency
//
// All methods of Bridge are safe for concurrent use. OnMessage blocks the
// calling sipws connection's goroutine until sipgo has read the message, so
// it keeps sipws's order and back-pressure; it never blocks another
// connection.
package sipwssipgo
