// Package sipws carries SIP (RFC 7118) and MSRP (RFC 7977) over WebSocket
// (RFC 6455) for Go SIP servers: the Go counterpart of Kamailio's websocket
// module.
//
// RFC 6455 defines the WebSocket protocol: an HTTP/1.1 GET upgraded with a
// 101 response, then framed messages in both directions, pings and pongs, and
// a close handshake. RFC 7118 runs SIP over it with the "sip" sub-protocol:
// each WebSocket message carries exactly one SIP message, in a text or binary
// frame. RFC 7977 does the same for MSRP with the "msrp" sub-protocol. A
// browser phone (JsSIP, SIP.js) cannot receive connections, so the server
// routes requests back to it over the connection it opened. RFC 8441 carries
// a WebSocket on a stream of an HTTP/2 connection instead (an Extended
// CONNECT answered with 200): sipws serves it too when the process runs with
// GODEBUG=http2xconnect=1 (see the README's HTTP/2 section and Conn.HTTP2).
//
// A host mounts a Server as an http.Handler (or calls HandleHandshake from its
// own handler after its own checks), receives each message with its Conn in
// Config.OnMessage, sends with Conn.Send, and learns in Config.OnClosed when a
// connection ends. The Registry finds live connections by ID, lists them
// (Dump, the RPC ws.dump) and closes or pings them. Stats gives Kamailio's
// counters. Keepalive (Ping, Pong or none) runs on a few workers owned by the
// Server.
//
// # Concurrency
//
// All methods of Server, Registry and Conn are safe for concurrent use.
//
// Each connection has one goroutine, started by HandleHandshake after the
// 101, which reads its frames and calls its hooks: OnOpen first, then
// OnMessage for each message in order, then OnClosed exactly once. A hook
// therefore blocks the reading of its own connection only, never another
// one; a host that does slow work per message should hand it off. Hooks are
// never called with a lock of this package held, so they may call any method,
// including on their own connection. A panic in OnOpen or OnMessage is
// recovered, logged, and fails only that connection (1011); one in OnClosed
// is recovered and logged.
//
// Sending never waits for the peer: Send, Ping, Pong and Close write what the
// socket takes at once (without blocking) and queue the rest; a goroutine
// owned by the connection, started when the queue fills and ended when it
// empties, writes it with Config.WriteTimeout. A peer
// that does not read is closed once its queue passes Config.SendQueueSize
// (ErrSendQueueFull), without slowing anyone else.
//
// Shutdown closes every connection with 1001 (also one whose 101 went out as
// Shutdown began) and waits for their goroutines, the writers and the
// keepalive workers: after it returns nil, nothing of the Server runs — but
// for the connection of the hook that called it, if one did: Shutdown never
// waits for its caller's own goroutine, whose connection ends once the hook
// returns. Shutdown never waits past its ctx either, whatever the hooks do:
// once ctx is done it drops the connections left (closes their sockets) and
// returns ctx's error; a connection whose goroutine is inside a hook then ends
// when the hook returns, and its OnClosed still runs, once. Calling Shutdown
// again waits for those ends. http.Server.Shutdown does not touch hijacked
// connections, so a host calls both; Server.Shutdown first, as
// http.Server.Shutdown waits for the handlers that serve WebSockets over
// HTTP/2.
package sipws
