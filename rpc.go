package sipws

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// This file is the RPC interface of Kamailio's websocket module (ws.dump,
// ws.close, ws.ping, ws.pong, ws.disable, ws.enable) and the part of its
// statistics RPC (stats.get_statistics) that covers the websocket group, as
// JSON-RPC 2.0 over HTTP like Kamailio's jsonrpcs module.

// maxRPCRequestSize is the largest request body NewRPCHandler reads unless
// RPCOptions.MaxRequestBytes says otherwise: 1 MiB.
const maxRPCRequestSize = 1 << 20

// RPCOptions configures NewRPCHandler. A nil *RPCOptions means every
// default, and so does a zero (or negative) field.
type RPCOptions struct {
	// AllowedHosts are the names a request's Host may give besides a
	// loopback address (127.0.0.0/8, ::1) and "localhost", which are always
	// allowed: for instance the name or address of a private admin
	// interface the handler is reached by. An entry is a host name or an IP
	// address, matched without regard to case or port (a port in an entry
	// is ignored). A request for any other Host gets 421 Misdirected Request
	// before its body is read, so that a web page whose name an attacker
	// rebinds to 127.0.0.1 cannot drive the handler through a browser on the
	// same machine. Default: none besides loopback.
	AllowedHosts []string

	// MaxBatch is the most calls one batch request may hold; a longer batch
	// is refused whole, none of it run, with -32600 "Invalid Request".
	// Default: 100.
	MaxBatch int

	// MaxDumpRows is the most connections one ws.dump lists. A limit of -1
	// ("all") lists at most this many, with "truncated" true when more
	// matched; a larger explicit limit is refused with 500 "Invalid
	// Parameters". Walk through more connections with limit and offset.
	// Default: 10,000 (about 2 MB of JSON).
	MaxDumpRows int

	// MaxResponseBytes bounds the results of one request. A call whose
	// response would take the body past it gets -32000 "Response too large"
	// instead, and the calls after it in the batch are not run and get the
	// same error, so that the body stays valid JSON at most this size plus
	// those short errors (which echo the request's ids). Default: 16 MiB.
	MaxResponseBytes int

	// MaxRequestBytes bounds a request body; a larger one gets 413 with a
	// JSON-RPC error. Default: 1 MiB.
	MaxRequestBytes int
}

// The defaults of RPCOptions.
const (
	defaultRPCMaxBatch         = 100
	defaultRPCMaxDumpRows      = 10000
	defaultRPCMaxResponseBytes = 16 << 20
)

// JSON-RPC 2.0 error codes, and the codes Kamailio's RPC functions fault
// with.
const (
	rpcParseError     = -32700
	rpcInvalidRequest = -32600
	rpcMethodNotFound = -32601
	rpcInternalError  = -32603
	rpcTooLarge       = -32000 // a server error: the response would pass RPCOptions.MaxResponseBytes

	rpcBadRequest  = 400 // Kamailio: a bad parameter value
	rpcServerError = 500 // Kamailio: everything else
)

// rpcError is a JSON-RPC error object. Message is Kamailio's text where it
// has one; Data, when set, says more.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    string `json:"data,omitempty"`
}

func rpcErr(code int, msg string) *rpcError { return &rpcError{Code: code, Message: msg} }

// invalidParams is Kamailio's 500 "Invalid Parameters", with what is wrong.
func invalidParams(format string, args ...any) *rpcError {
	return &rpcError{Code: rpcServerError, Message: "Invalid Parameters", Data: fmt.Sprintf(format, args...)}
}

var (
	errUnknownConn = rpcErr(rpcServerError, "Unknown connection ID")
	errBadOrder    = rpcErr(rpcBadRequest, "Bad display order parameter")
)

// rpcResponse is one JSON-RPC response. Result is already encoded so that a
// result that cannot be encoded fails its own request only.
type rpcResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *rpcError       `json:"error,omitempty"`
	ID      json.RawMessage `json:"id"` // nil encodes as null
}

// voidResult is the result of a method that returns nothing: an empty
// object, as Kamailio's jsonrpcs answers for an RPC that added nothing.
var voidResult = json.RawMessage("{}")

// rpcHandler serves the RPC methods of one Server.
type rpcHandler struct {
	s             *Server
	methods       map[string]func(*rpcRequest, rpcParams) (any, *rpcError)
	hosts         map[string]bool // RPCOptions.AllowedHosts, normalised by hostName
	maxBatch      int
	maxDumpRows   int
	maxResponse   int
	maxRequest    int
	originChecked http.Handler // cross-origin protection in front of serve
}

// rpcRequest is the state of one HTTP request, shared by the calls of a
// batch.
type rpcRequest struct {
	remote string
	// snap is the registry as the request's ws.dump calls list it: taken by
	// the first, again after a ws.close that worked.
	snap *connSnapshot
}

// NewRPCHandler returns an http.Handler that serves the RPC commands of
// Kamailio's websocket module for s, as JSON-RPC 2.0 over HTTP POST the way
// Kamailio's jsonrpcs module does (mount it at /RPC for Kamailio's tools).
//
// Methods, with their parameters in positional order (params may also be an
// object with these names):
//
//	ws.dump [order [limit [offset [subprotocol [remote_ip]]]]]
//	ws.close id [code [reason]]
//	ws.ping id
//	ws.pong id
//	ws.disable
//	ws.enable
//	stats.get_statistics [name...]   (named: {"names": [...]})
//	system.listMethods
//
// ws.dump lists connections as Registry.Dump: order is "id_hash" (the
// default), "used_desc" (least recently used first) or "used_asc" (most
// recently used first), in any case as Kamailio accepts them; limit is as
// DumpQuery.Limit (absent or 0: 50, as Kamailio; negative: all, up to
// RPCOptions.MaxDumpRows); offset skips that many; subprotocol ("sip" or
// "msrp") and remote_ip filter. Its result is
//
//	{"connections":[{"id":1,"src":"ws:127.0.0.1:40000","dst":"ws:127.0.0.1:8080",
//	  "state":"OPEN","awaiting_pong":false,"last_used_s":3,"subprotocol":"sip",
//	  "secure":false,"http2":false,"rtt_ms":0.42}],
//	 "info":{"wscounter":1,"total":1,"truncated":false}}
//
// where src is the client, dst the server, wss: marks a secure connection,
// http2 one carried by an HTTP/2 stream (RFC 8441),
// an IPv6 address is in brackets, last_used_s is the whole seconds since the
// last frame received, rtt_ms is the last Ping's round trip (0 when none was
// measured), wscounter is the number of connections listed (as Kamailio),
// total the number that matched the filters, and truncated reports that
// more matched than were listed.
//
// ws.close sends a close frame with code and reason (default 1000 "Normal
// closure"); ws.ping and ws.pong send Config.PingData. These, ws.disable and
// ws.enable return an empty object, as Kamailio's jsonrpcs does for a command
// that returns nothing.
//
// stats.get_statistics returns an array of strings in Kamailio's format,
// "websocket:ws_current_connections = 3", in the order of Stats.All, each at
// most once. A name is "all", the group "websocket:", or a statistic with or
// without its "websocket:" prefix; other names are skipped silently, as
// Kamailio does. With no name it returns all of them (Kamailio answers 400
// "Please provide which stats to retrieve").
//
// Connection IDs and other integers may be JSON numbers or strings holding
// one, and string parameters may be numbers, for tools that cannot tell them
// apart. A request id may be a string, a number or null; a request without
// one is a notification and gets no response. A batch gets an array of
// responses; a batch of notifications, like a single notification, gets 204
// No Content.
//
// Errors are JSON-RPC error objects, with Kamailio's codes and texts where it
// has them: {"code":500,"message":"Unknown connection ID"}, 400 "Bad display
// order parameter", 500 "Invalid Parameters" (with "data" saying which),
// 500 "Invalid close code", 500 "Invalid close reason", 500 "Error closing
// connection" (already closing), 500 "Error sending frame"; the JSON-RPC
// ones: -32700 "Parse error", -32600 "Invalid Request", -32601 "Method not
// found", -32603 "Internal error"; and -32000 "Response too large". Every
// JSON-RPC response, error or not, is sent with HTTP 200 (Kamailio sets the
// HTTP status to the fault code; a batch can mix results and errors). A
// request whose Host is not allowed gets 421, a method other than POST 405
// with Allow: POST, a body over RPCOptions.MaxRequestBytes 413, a refused
// cross-origin request 403; these carry a JSON-RPC error too. Responses are
// encoded whole before anything is written.
//
// Limits, each an RPCOptions field: a batch holds at most 100 calls, a
// ws.dump lists at most 10,000 connections, and the results of one request
// take at most 16 MiB. The ws.dump calls of one request list one snapshot
// of the registry, taken by the first of them (and taken again after a
// ws.close that worked), so that the pages of one batch neither repeat nor
// miss a connection and a batch costs one pass over the registry, not one
// per call.
//
// The handler authenticates no one: any client that reaches it can close
// every connection. Serve it on a loopback or otherwise private listener, or
// behind the host's own authentication. Against a web page driving it
// through a browser on the same machine, it refuses cross-origin requests
// (http.CrossOriginProtection) and a Host that is neither a loopback
// address, "localhost", nor in RPCOptions.AllowedHosts (DNS rebinding).
//
// opts may be nil: every default.
func NewRPCHandler(s *Server, opts *RPCOptions) http.Handler {
	if opts == nil {
		opts = &RPCOptions{}
	}
	h := &rpcHandler{
		s:           s,
		hosts:       make(map[string]bool, len(opts.AllowedHosts)),
		maxBatch:    positiveOr(opts.MaxBatch, defaultRPCMaxBatch),
		maxDumpRows: positiveOr(opts.MaxDumpRows, defaultRPCMaxDumpRows),
		maxResponse: positiveOr(opts.MaxResponseBytes, defaultRPCMaxResponseBytes),
		maxRequest:  positiveOr(opts.MaxRequestBytes, maxRPCRequestSize),
	}
	for _, name := range opts.AllowedHosts {
		if n := hostName(name); n != "" {
			h.hosts[n] = true
		}
	}
	h.methods = map[string]func(*rpcRequest, rpcParams) (any, *rpcError){
		"ws.dump":              h.dump,
		"ws.close":             h.close,
		"ws.ping":              func(_ *rpcRequest, p rpcParams) (any, *rpcError) { return h.pingPong(p, s.reg.Ping) },
		"ws.pong":              func(_ *rpcRequest, p rpcParams) (any, *rpcError) { return h.pingPong(p, s.reg.Pong) },
		"ws.disable":           func(_ *rpcRequest, p rpcParams) (any, *rpcError) { return h.toggle(p, s.Disable) },
		"ws.enable":            func(_ *rpcRequest, p rpcParams) (any, *rpcError) { return h.toggle(p, s.Enable) },
		"stats.get_statistics": h.statistics,
		"system.listMethods":   h.listMethods,
	}
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeRPCError(w, http.StatusForbidden, &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request", Data: "cross-origin request refused"})
	}))
	h.originChecked = cop.Handler(http.HandlerFunc(h.serve))
	return h
}

// positiveOr returns v, or def when v is not positive.
func positiveOr(v, def int) int {
	if v > 0 {
		return v
	}
	return def
}

// hostName returns the host of a Host header or an AllowedHosts entry, in
// lower case, without port, brackets or a final dot.
func hostName(hostport string) string {
	host := strings.TrimSpace(hostport)
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// hostAllowed reports whether a request for Host hostport may be served:
// a loopback address, "localhost", or one of RPCOptions.AllowedHosts.
func (h *rpcHandler) hostAllowed(hostport string) bool {
	name := hostName(hostport)
	if name == "" {
		return false
	}
	if name == "localhost" || h.hosts[name] {
		return true
	}
	ip, err := netip.ParseAddr(name)
	return err == nil && ip.Unmap().IsLoopback()
}

// ServeHTTP implements http.Handler: the Host is checked first, then the
// origin, then the request is served.
func (h *rpcHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.hostAllowed(r.Host) {
		h.s.log.Info("rpc: request refused: Host not allowed", "host", r.Host, "remote", r.RemoteAddr)
		writeRPCError(w, http.StatusMisdirectedRequest, &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request",
			Data: fmt.Sprintf("Host %s is not allowed: use a loopback address or localhost, or add the name to RPCOptions.AllowedHosts", strconv.Quote(r.Host))})
		return
	}
	h.originChecked.ServeHTTP(w, r)
}

// serve answers a request whose Host and origin passed.
func (h *rpcHandler) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeRPCError(w, http.StatusMethodNotAllowed, &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request", Data: "use POST"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(h.maxRequest)))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeRPCError(w, http.StatusRequestEntityTooLarge, &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request",
				Data: fmt.Sprintf("request body over %d bytes", h.maxRequest)})
			return
		}
		writeRPCError(w, http.StatusBadRequest, &rpcError{Code: rpcParseError, Message: "Parse error", Data: "reading the request: " + err.Error()})
		return
	}
	out, status := h.handle(body, r.RemoteAddr)
	if status == http.StatusNoContent {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeRPCBody(w, status, out)
}

// handle answers a request body: it returns the response body and the HTTP
// status (204 with no body when there is nothing to answer).
func (h *rpcHandler) handle(body []byte, remote string) ([]byte, int) {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || !json.Valid(body) {
		return mustMarshal(rpcResponse{JSONRPC: "2.0", Error: rpcErr(rpcParseError, "Parse error")}), http.StatusOK
	}
	req := &rpcRequest{remote: remote}
	if body[0] != '[' {
		resp, ok := h.one(body, req, true)
		if !ok {
			return nil, http.StatusNoContent
		}
		b := h.marshalResponse(resp)
		if len(b) > h.maxResponse {
			b = mustMarshal(rpcResponse{JSONRPC: "2.0", Error: h.tooLarge(true), ID: resp.ID})
		}
		return b, http.StatusOK
	}
	var batch []json.RawMessage
	if err := json.Unmarshal(body, &batch); err != nil { // cannot happen: body is a valid array
		return mustMarshal(rpcResponse{JSONRPC: "2.0", Error: rpcErr(rpcParseError, "Parse error")}), http.StatusOK
	}
	if len(batch) == 0 {
		return mustMarshal(rpcResponse{JSONRPC: "2.0", Error: &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request", Data: "empty batch"}}), http.StatusOK
	}
	if len(batch) > h.maxBatch {
		return mustMarshal(rpcResponse{JSONRPC: "2.0", Error: &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request",
			Data: fmt.Sprintf("batch of %d calls: at most %d per request, none was run", len(batch), h.maxBatch)}}), http.StatusOK
	}
	var parts [][]byte
	size := 2 // the brackets
	spent := false
	for _, raw := range batch {
		resp, ok := h.one(raw, req, !spent)
		if !ok {
			continue
		}
		b := h.marshalResponse(resp)
		if len(parts) > 0 {
			size++ // the comma
		}
		if !spent && size+len(b) > h.maxResponse {
			spent = true
			b = mustMarshal(rpcResponse{JSONRPC: "2.0", Error: h.tooLarge(true), ID: resp.ID})
		}
		size += len(b)
		parts = append(parts, b)
	}
	if len(parts) == 0 {
		return nil, http.StatusNoContent
	}
	out := make([]byte, 0, size)
	out = append(out, '[')
	out = append(out, bytes.Join(parts, []byte{','})...)
	return append(out, ']'), http.StatusOK
}

// tooLarge is the error of a call whose response would take the body past
// MaxResponseBytes (ran) and of the calls after it, which are not run.
func (h *rpcHandler) tooLarge(ran bool) *rpcError {
	what := "this response would take the body past"
	if !ran {
		what = "not run: the response had reached"
	}
	return &rpcError{Code: rpcTooLarge, Message: "Response too large",
		Data: fmt.Sprintf("%s its limit of %d bytes; list fewer connections per ws.dump (limit and offset) or send fewer calls per request", what, h.maxResponse)}
}

// marshalResponse encodes one response; should that fail, it encodes an
// internal error for the same id instead.
func (h *rpcHandler) marshalResponse(resp rpcResponse) []byte {
	if resp.Error == nil && resp.Result != nil {
		// The result comes from json.Marshal and the id from the request,
		// both valid JSON: join them rather than have json.Marshal scan a
		// result of megabytes again.
		id := resp.ID
		if id == nil {
			id = json.RawMessage("null")
		}
		b := make([]byte, 0, len(resp.Result)+len(id)+32)
		b = append(b, `{"jsonrpc":"2.0","result":`...)
		b = append(b, resp.Result...)
		b = append(b, `,"id":`...)
		b = append(b, id...)
		return append(b, '}')
	}
	b, err := json.Marshal(resp)
	if err != nil {
		h.s.log.Error("rpc: encoding a response", "err", err)
		return mustMarshal(rpcResponse{JSONRPC: "2.0", Error: rpcErr(rpcInternalError, "Internal error")})
	}
	return b
}

// one answers one request object. It returns false for a notification. When
// run is false, the call is checked but not run, and gets tooLarge's error.
func (h *rpcHandler) one(raw json.RawMessage, req *rpcRequest, run bool) (rpcResponse, bool) {
	resp := rpcResponse{JSONRPC: "2.0"}
	invalid := func(detail string) (rpcResponse, bool) {
		resp.Error = &rpcError{Code: rpcInvalidRequest, Message: "Invalid Request", Data: detail}
		return resp, true
	}
	// Keys are matched exactly (encoding/json would match "ID" to id).
	var obj map[string]json.RawMessage
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &obj) != nil {
		return invalid("a request must be an object")
	}
	id, hasID := obj["id"]
	if hasID {
		switch jsonKind(id) {
		case kindString, kindNumber, kindNull:
			resp.ID = id
		default:
			return invalid("id must be a string, a number or null")
		}
	}
	var version, method string
	if json.Unmarshal(obj["jsonrpc"], &version) != nil || version != "2.0" {
		return invalid(`"jsonrpc" must be "2.0"`)
	}
	if jsonKind(obj["method"]) != kindString || json.Unmarshal(obj["method"], &method) != nil {
		return invalid(`"method" must be a string`)
	}
	if !run {
		resp.Error = h.tooLarge(false)
		return resp, hasID
	}
	result, rerr := h.call(method, obj["params"], req)
	if !hasID {
		return resp, false
	}
	if rerr != nil {
		resp.Error = rerr
		return resp, true
	}
	b, err := json.Marshal(result)
	if err != nil {
		h.s.log.Error("rpc: encoding a result", "method", method, "err", err)
		resp.Error = rpcErr(rpcInternalError, "Internal error")
		return resp, true
	}
	resp.Result = b
	return resp, true
}

// call runs a method. A panic in it is an internal error, never a crash.
func (h *rpcHandler) call(method string, rawParams json.RawMessage, req *rpcRequest) (result any, rerr *rpcError) {
	f, ok := h.methods[method]
	if !ok {
		return nil, rpcErr(rpcMethodNotFound, "Method not found")
	}
	p, rerr := parseParams(rawParams)
	if rerr != nil {
		return nil, rerr
	}
	defer func() {
		if v := recover(); v != nil {
			h.s.log.Error("rpc: panic", "method", method, "panic", v)
			result, rerr = nil, rpcErr(rpcInternalError, "Internal error")
		}
	}()
	h.s.log.Debug("rpc", "method", method, "remote", req.remote)
	return f(req, p)
}

// rpcParams are a request's params: positional or named, never both.
type rpcParams struct {
	pos   []json.RawMessage
	named map[string]json.RawMessage // nil when positional
}

func parseParams(raw json.RawMessage) (rpcParams, *rpcError) {
	var p rpcParams
	switch jsonKind(raw) {
	case kindNone, kindNull:
		return p, nil
	case kindArray:
		if json.Unmarshal(raw, &p.pos) == nil {
			return p, nil
		}
	case kindObject:
		if json.Unmarshal(raw, &p.named) == nil {
			if p.named == nil {
				p.named = map[string]json.RawMessage{}
			}
			return p, nil
		}
	}
	return p, invalidParams("params must be an array or an object")
}

// bind maps the params to names: positional ones in the order of names,
// named ones by key. More positional params than names, or an unknown name,
// is an error. A null value counts as absent.
func (p rpcParams) bind(names ...string) (map[string]json.RawMessage, *rpcError) {
	args := make(map[string]json.RawMessage, len(names))
	if p.named != nil {
		for k, v := range p.named {
			if !slices.Contains(names, k) {
				if len(names) == 0 {
					return nil, invalidParams("no parameters expected")
				}
				return nil, invalidParams("unknown parameter %s (want %s)", strconv.Quote(k), strings.Join(names, ", "))
			}
			if jsonKind(v) != kindNull {
				args[k] = v
			}
		}
		return args, nil
	}
	if len(p.pos) > len(names) {
		if len(names) == 0 {
			return nil, invalidParams("no parameters expected")
		}
		return nil, invalidParams("at most %d parameters (%s)", len(names), strings.Join(names, ", "))
	}
	for i, v := range p.pos {
		if jsonKind(v) != kindNull {
			args[names[i]] = v
		}
	}
	return args, nil
}

// jsonKind classifies an encoded JSON value by its first byte.
type jsonValueKind uint8

const (
	kindNone jsonValueKind = iota
	kindNull
	kindBool
	kindNumber
	kindString
	kindArray
	kindObject
)

func jsonKind(v json.RawMessage) jsonValueKind {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return kindNone
	}
	switch c := v[0]; {
	case c == 'n':
		return kindNull
	case c == 't' || c == 'f':
		return kindBool
	case c == '"':
		return kindString
	case c == '[':
		return kindArray
	case c == '{':
		return kindObject
	case c == '-' || c >= '0' && c <= '9':
		return kindNumber
	}
	return kindNone
}

// stringArg returns a string parameter. A number is taken as its text, as
// Kamailio's auto-conversion does.
func stringArg(v json.RawMessage) (string, bool) {
	switch jsonKind(v) {
	case kindString:
		var s string
		if json.Unmarshal(v, &s) == nil {
			return s, true
		}
	case kindNumber:
		return string(bytes.TrimSpace(v)), true
	}
	return "", false
}

// intArg returns an integer parameter: a JSON number with an integral value
// or a string holding one.
func intArg(v json.RawMessage) (int64, bool) {
	s, ok := stringArg(v)
	if !ok {
		return 0, false
	}
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int64(f), true
}

// connID returns the connection ID parameter id, which is required.
func connID(args map[string]json.RawMessage) (ConnID, *rpcError) {
	v, ok := args["id"]
	if !ok {
		return 0, invalidParams("missing connection id")
	}
	if s, isStr := stringArg(v); isStr {
		if n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64); err == nil {
			return ConnID(n), nil
		}
	}
	n, ok := intArg(v)
	if !ok || n < 0 {
		return 0, invalidParams("id must be a non-negative integer")
	}
	return ConnID(n), nil
}

// rpcDumpConn is one connection in the ws.dump result.
type rpcDumpConn struct {
	ID           ConnID  `json:"id"`
	Src          string  `json:"src"`
	Dst          string  `json:"dst"`
	State        string  `json:"state"`
	AwaitingPong bool    `json:"awaiting_pong"`
	LastUsedS    int64   `json:"last_used_s"`
	Subprotocol  string  `json:"subprotocol"`
	Secure       bool    `json:"secure"`
	HTTP2        bool    `json:"http2"`
	RTTms        float64 `json:"rtt_ms"`
}

// rpcDumpResult is the ws.dump result.
type rpcDumpResult struct {
	Connections []rpcDumpConn `json:"connections"`
	Info        struct {
		WSCounter int  `json:"wscounter"`
		Total     int  `json:"total"`
		Truncated bool `json:"truncated"`
	} `json:"info"`
}

// dump is ws.dump [order [limit [offset [subprotocol [remote_ip]]]]].
func (h *rpcHandler) dump(req *rpcRequest, p rpcParams) (any, *rpcError) {
	args, rerr := p.bind("order", "limit", "offset", "subprotocol", "remote_ip")
	if rerr != nil {
		return nil, rerr
	}
	var q DumpQuery
	if v, ok := args["order"]; ok {
		s, ok := stringArg(v)
		if !ok {
			return nil, errBadOrder
		}
		o, err := parseDumpOrder(strings.ToLower(s)) // Kamailio ignores case
		if err != nil {
			return nil, errBadOrder
		}
		q.Order = o
	}
	if v, ok := args["limit"]; ok {
		n, ok := intArg(v)
		if !ok {
			return nil, invalidParams("limit must be an integer")
		}
		switch {
		case n < 0:
			q.Limit = h.maxDumpRows
		case n > int64(h.maxDumpRows):
			return nil, invalidParams("limit %d is over the %d connections one ws.dump may list: page with limit and offset", n, h.maxDumpRows)
		default:
			q.Limit = int(n)
		}
	}
	if v, ok := args["offset"]; ok {
		n, ok := intArg(v)
		if !ok || n < 0 {
			return nil, invalidParams("offset must be a non-negative integer")
		}
		q.Offset = int(min(n, math.MaxInt32))
	}
	if v, ok := args["subprotocol"]; ok {
		s, ok := stringArg(v)
		if !ok {
			return nil, invalidParams(`subprotocol must be "sip" or "msrp"`)
		}
		if s = strings.TrimSpace(s); s != "" && !strings.EqualFold(s, "all") {
			sp, err := parseSubprotocols(s)
			if err != nil {
				return nil, invalidParams(`subprotocol must be "sip" or "msrp"`)
			}
			q.Subprotocol = sp
		}
	}
	if v, ok := args["remote_ip"]; ok {
		s, ok := stringArg(v)
		if !ok {
			return nil, invalidParams("remote_ip must be an IP address")
		}
		if s = strings.TrimSpace(s); s != "" {
			ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
			if err != nil {
				return nil, invalidParams("remote_ip %s is not an IP address", strconv.Quote(s))
			}
			q.RemoteIP = ip
		}
	}

	if q.Limit == 0 {
		q.Limit = min(defaultDumpLimit, h.maxDumpRows)
	}
	if req.snap == nil {
		req.snap = h.s.reg.snapshot(DumpQuery{})
	}
	d := req.snap.query(q)
	now := h.s.clock.Now()
	res := rpcDumpResult{Connections: make([]rpcDumpConn, 0, len(d.Conns))}
	for _, ci := range d.Conns {
		scheme := "ws"
		if ci.Secure {
			scheme = "wss"
		}
		res.Connections = append(res.Connections, rpcDumpConn{
			ID:           ci.ID,
			Src:          endpoint(scheme, ci.RemoteAddr),
			Dst:          endpoint(scheme, ci.LocalAddr),
			State:        ci.State,
			AwaitingPong: ci.AwaitingPong,
			LastUsedS:    max(int64(now.Sub(ci.LastUsed)/time.Second), 0),
			Subprotocol:  ci.Subprotocol.String(),
			Secure:       ci.Secure,
			HTTP2:        ci.HTTP2,
			RTTms:        float64(ci.RTT.Microseconds()) / 1000,
		})
	}
	res.Info.WSCounter = len(res.Connections)
	res.Info.Total = d.Total
	res.Info.Truncated = d.Truncated
	return res, nil
}

// endpoint formats "ws:IP:PORT" ("ws:[IPv6]:PORT"), or "ws:*" for an address
// that is not known, as Kamailio.
func endpoint(scheme string, ap netip.AddrPort) string {
	if !ap.IsValid() {
		return scheme + ":*"
	}
	return scheme + ":" + ap.String()
}

// close is ws.close id [code [reason]].
func (h *rpcHandler) close(req *rpcRequest, p rpcParams) (any, *rpcError) {
	args, rerr := p.bind("id", "code", "reason")
	if rerr != nil {
		return nil, rerr
	}
	id, rerr := connID(args)
	if rerr != nil {
		return nil, rerr
	}
	var code CloseCode
	if v, ok := args["code"]; ok {
		n, ok := intArg(v)
		if !ok {
			return nil, invalidParams("code must be an integer")
		}
		if n < 0 || n > math.MaxUint16 || (n != 0 && !CloseCode(n).validOnWire()) {
			return nil, &rpcError{Code: rpcServerError, Message: "Invalid close code", Data: fmt.Sprintf("%d may not be sent (RFC 6455 §7.4)", n)}
		}
		code = CloseCode(n)
	}
	var reason string
	if v, ok := args["reason"]; ok {
		s, ok := stringArg(v)
		if !ok {
			return nil, invalidParams("reason must be a string")
		}
		reason = s
	}
	c, ok := h.s.reg.Get(id)
	if !ok {
		return nil, errUnknownConn
	}
	switch err := c.Close(code, reason); {
	case err == nil:
		req.snap = nil // a later ws.dump shows it closing
		return voidResult, nil
	case errors.Is(err, errInvalidCloseCode):
		return nil, &rpcError{Code: rpcServerError, Message: "Invalid close code", Data: err.Error()}
	case errors.Is(err, errInvalidCloseReason):
		return nil, &rpcError{Code: rpcServerError, Message: "Invalid close reason", Data: err.Error()}
	default:
		return nil, &rpcError{Code: rpcServerError, Message: "Error closing connection", Data: err.Error()}
	}
}

// pingPong is ws.ping id and ws.pong id.
func (h *rpcHandler) pingPong(p rpcParams, send func(ConnID) error) (any, *rpcError) {
	args, rerr := p.bind("id")
	if rerr != nil {
		return nil, rerr
	}
	id, rerr := connID(args)
	if rerr != nil {
		return nil, rerr
	}
	switch err := send(id); {
	case err == nil:
		return voidResult, nil
	case errors.Is(err, ErrNotFound):
		return nil, errUnknownConn
	default:
		return nil, &rpcError{Code: rpcServerError, Message: "Error sending frame", Data: err.Error()}
	}
}

// toggle is ws.disable and ws.enable.
func (h *rpcHandler) toggle(p rpcParams, f func()) (any, *rpcError) {
	if _, rerr := p.bind(); rerr != nil {
		return nil, rerr
	}
	f()
	return voidResult, nil
}

// statsGroup is the group of the statistics in Kamailio.
const statsGroup = "websocket:"

// statistics is stats.get_statistics [name...].
func (h *rpcHandler) statistics(_ *rpcRequest, p rpcParams) (any, *rpcError) {
	var names []json.RawMessage
	if p.named != nil {
		args, rerr := p.bind("names")
		if rerr != nil {
			return nil, rerr
		}
		if v, ok := args["names"]; ok {
			if jsonKind(v) == kindArray {
				if json.Unmarshal(v, &names) != nil {
					return nil, invalidParams("names must be an array of strings")
				}
			} else {
				names = []json.RawMessage{v}
			}
		}
	} else {
		names = p.pos
	}
	all := len(names) == 0
	want := map[string]bool{}
	for _, v := range names {
		s, ok := stringArg(v)
		if !ok {
			return nil, invalidParams("statistic names must be strings")
		}
		switch {
		case s == "all" || s == statsGroup:
			all = true
		case strings.HasPrefix(s, statsGroup):
			want[s[len(statsGroup):]] = true
		case !strings.Contains(s, ":"):
			want[s] = true
		}
	}
	lines := []string{}
	for _, st := range h.s.Stats().list() {
		if all || want[st.Name] {
			lines = append(lines, statsGroup+st.Name+" = "+strconv.FormatUint(st.Value, 10))
		}
	}
	return lines, nil
}

// listMethods is system.listMethods.
func (h *rpcHandler) listMethods(_ *rpcRequest, p rpcParams) (any, *rpcError) {
	if _, rerr := p.bind(); rerr != nil {
		return nil, rerr
	}
	names := make([]string, 0, len(h.methods))
	for name := range h.methods {
		names = append(names, name)
	}
	slices.Sort(names)
	return names, nil
}

// writeRPCError writes a response with only an error, and a null id.
func writeRPCError(w http.ResponseWriter, status int, e *rpcError) {
	writeRPCBody(w, status, mustMarshal(rpcResponse{JSONRPC: "2.0", Error: e}))
}

// writeRPCBody writes a complete, already encoded JSON body.
func writeRPCBody(w http.ResponseWriter, status int, body []byte) {
	body = append(body, '\n')
	hd := w.Header()
	hd.Set("Content-Type", "application/json")
	hd.Set("Content-Length", strconv.Itoa(len(body)))
	hd.Set("Cache-Control", "no-store")
	hd.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// mustMarshal encodes a response made only of values that always encode.
func mustMarshal(r rpcResponse) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		return []byte(`{"jsonrpc":"2.0","error":{"code":-32603,"message":"Internal error"},"id":null}`)
	}
	return b
}
