package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/redis/go-redis/v9"
	"github.com/sipws/sipws"
)

// A cluster: several webphone nodes (edges) behind a load balancer, one
// location service in Redis, as Kamailio deployments do with Path and a
// shared usrloc. Every binding records the node that holds its flow and its
// Path, a flow-token URI of that node's -sip-addr
// (sip:TOKEN@HOST:PORT;transport=tcp;lr). A request for a user whose flow is
// on another node goes there over SIP on TCP with that Path as its Route;
// that node resolves the token and sends the request down the WebSocket
// (RFC 5626 §5.3), and the responses come back by the Vias.
//
// Liveness: each node refreshes a heartbeat key (its run and -sip-addr)
// every heartbeatEvery with a TTL of heartbeatTTL and reads the others';
// bindings of a node whose heartbeat is gone, or of an earlier run of it,
// are skipped. A node killed without a goodbye is thus out of the routing
// within heartbeatTTL+heartbeatEvery.
//
// Trust: the -sip-addr listener forwards nothing on anyone's say-so. A
// request that arrives there must carry, in its top Route, a flow token this
// node signed (403 otherwise, 430 when its flow is gone); it goes to that
// flow only, never to another node. Responses are accepted only for branches
// of ours sent on the same TCP connection. Bind -sip-addr to loopback or a
// private network: the flow tokens are the only credential.

// Heartbeat timing: a node that stops refreshing is taken out of the
// routing within heartbeatTTL + heartbeatEvery.
const (
	heartbeatEvery = time.Second
	heartbeatTTL   = 3 * time.Second
)

// Inter-node links: dial and write bounds, and how long an idle link is kept.
const (
	peerDialTimeout  = 2 * time.Second
	peerWriteTimeout = 5 * time.Second
	peerIdle         = 10 * time.Minute
	maxPeerLinks     = 256 // inbound connections on -sip-addr at once
)

// keyPrefix namespaces every key of the webphone in Redis.
const keyPrefix = "sipws:webphone:"

// endpoint is where a SIP message comes from or goes to: a browser's
// WebSocket connection (*sipws.Conn) or a TCP link to another node
// (*peerLink).
type endpoint interface {
	ID() sipws.ConnID
	Send(data []byte) error
	RemoteAddr() netip.AddrPort
	Secure() bool
}

// peerIDBase marks the IDs of peer links: sipws numbers its connections
// from 1, so the top bit never collides with one.
const peerIDBase sipws.ConnID = 1 << 63

func isPeerID(id sipws.ConnID) bool { return id&peerIDBase != 0 }

// peerLink is a TCP connection to another node, dialled by us (to send it
// requests) or accepted on -sip-addr (requests from it). Responses go back
// on the link their request came on.
type peerLink struct {
	id     sipws.ConnID
	addr   string // the peer's -sip-addr for a link we dialled; "" for an accepted one
	conn   net.Conn
	remote netip.AddrPort
	wmu    sync.Mutex
}

func (l *peerLink) ID() sipws.ConnID           { return l.id }
func (l *peerLink) RemoteAddr() netip.AddrPort { return l.remote }
func (l *peerLink) Secure() bool               { return false }

// Send writes one SIP message; a failed write ends the link.
func (l *peerLink) Send(data []byte) error {
	l.wmu.Lock()
	defer l.wmu.Unlock()
	_ = l.conn.SetWriteDeadline(time.Now().Add(peerWriteTimeout))
	if _, err := l.conn.Write(data); err != nil {
		_ = l.conn.Close()
		return err
	}
	return nil
}

// nodeInfo is what a node's heartbeat says.
type nodeInfo struct {
	run  string
	addr string
}

// cluster is this node's part of the cluster: its heartbeat, the live nodes
// it saw last, the -sip-addr listener and the links to the other nodes.
type cluster struct {
	node string
	run  string // random per start: bindings of an earlier run are not used
	addr string // -sip-addr as bound: HOST:PORT
	rdb  *redis.Client
	log  *slog.Logger
	ln   net.Listener
	p    *proxy

	mu        sync.Mutex
	live      map[string]nodeInfo  // by node name, from the last heartbeat
	checked   map[string]time.Time // when isLive last asked Redis about a node
	refreshed time.Time            // when nodeByAddr last read every heartbeat
	links     map[sipws.ConnID]*peerLink
	out       map[string]*peerLink // dialled links by address
	nextID    sipws.ConnID
	closed    bool

	silent atomic.Bool // tests: the heartbeat stops, as if the node died
	stop   chan struct{}
	wg     sync.WaitGroup
}

func nodeKey(node string) string { return keyPrefix + "node:" + node }

const nodesKey = keyPrefix + "nodes"

// newCluster joins the cluster as node: it listens on sipAddr and writes
// its first heartbeat, failing when another live node has the same name.
func newCluster(ctx context.Context, node, sipAddr string, rdb *redis.Client, log *slog.Logger) (*cluster, error) {
	var r [8]byte
	_, _ = rand.Read(r[:])
	cl := &cluster{
		node: node, run: hex.EncodeToString(r[:]), rdb: rdb, log: log,
		live: make(map[string]nodeInfo), checked: make(map[string]time.Time), links: make(map[sipws.ConnID]*peerLink),
		out: make(map[string]*peerLink), stop: make(chan struct{}),
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		return nil, fmt.Errorf("redis: %w", err)
	}
	// A node of this name that was killed a moment ago still has its
	// heartbeat for up to heartbeatTTL: wait for it to lapse; one that
	// keeps beating is another live node of the same name.
	for deadline := time.Now().Add(heartbeatTTL + heartbeatEvery); ; {
		v, err := rdb.Get(ctx, nodeKey(node)).Result()
		if errors.Is(err, redis.Nil) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("redis: %w", err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("node %q is already live (heartbeat %q): pick another -node", node, v)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node %q is already live (heartbeat %q): %w", node, v, ctx.Err())
		case <-time.After(heartbeatEvery / 4):
		}
	}
	ln, err := net.Listen("tcp", sipAddr)
	if err != nil {
		return nil, fmt.Errorf("-sip-addr: %w", err)
	}
	cl.ln, cl.addr = ln, ln.Addr().String()
	if err := cl.beat(ctx); err != nil {
		_ = ln.Close()
		return nil, err
	}
	return cl, nil
}

// start runs the heartbeat and the -sip-addr listener for p.
func (cl *cluster) start(p *proxy) {
	cl.p = p
	cl.wg.Add(2)
	go cl.heartbeat()
	go cl.accept()
}

// beat refreshes our heartbeat and reads the others'.
func (cl *cluster) beat(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, heartbeatEvery)
	defer cancel()
	_, err := cl.rdb.TxPipelined(ctx, func(pp redis.Pipeliner) error {
		pp.SAdd(ctx, nodesKey, cl.node)
		pp.Set(ctx, nodeKey(cl.node), cl.run+" "+cl.addr, heartbeatTTL)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis heartbeat: %w", err)
	}
	return cl.refresh(ctx)
}

// refresh reads the heartbeats of the nodes.
func (cl *cluster) refresh(ctx context.Context) error {
	names, err := cl.rdb.SMembers(ctx, nodesKey).Result()
	if err != nil {
		return fmt.Errorf("redis nodes: %w", err)
	}
	keys := make([]string, len(names))
	for i, n := range names {
		keys[i] = nodeKey(n)
	}
	vals, err := cl.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return fmt.Errorf("redis nodes: %w", err)
	}
	live := make(map[string]nodeInfo, len(names))
	var dead []any
	for i, v := range vals {
		s, _ := v.(string)
		run, addr, ok := strings.Cut(s, " ")
		if !ok {
			dead = append(dead, names[i])
			continue
		}
		live[names[i]] = nodeInfo{run: run, addr: addr}
	}
	if len(dead) > 0 {
		cl.rdb.SRem(ctx, nodesKey, dead...) // re-added by their next heartbeat if they come back
	}
	cl.mu.Lock()
	for n := range cl.live {
		if _, ok := live[n]; !ok {
			cl.log.Warn("node gone: its bindings are no longer used", "node", n)
		}
	}
	for n, i := range live {
		if old, ok := cl.live[n]; !ok || old != i {
			cl.log.Info("node live", "node", n, "sip_addr", i.addr, "run", i.run)
		}
	}
	cl.live = live
	cl.mu.Unlock()
	return nil
}

func (cl *cluster) heartbeat() {
	defer cl.wg.Done()
	tk := time.NewTicker(heartbeatEvery)
	defer tk.Stop()
	for {
		select {
		case <-cl.stop:
			return
		case <-tk.C:
			if cl.silent.Load() {
				continue
			}
			if err := cl.beat(context.Background()); err != nil {
				cl.log.Warn("heartbeat failed", "err", err)
			}
		}
	}
}

// isLive reports whether the binding's node and run are live (ours always
// is, while we run).
func (cl *cluster) isLive(node, run string) bool {
	if node == cl.node {
		return run == cl.run
	}
	cl.mu.Lock()
	i, ok := cl.live[node]
	checked := cl.checked[node]
	cl.mu.Unlock()
	if ok && i.run == run {
		return true
	}
	// A node started since our last heartbeat (or a new run of one): ask
	// Redis now, at most every recheckEvery per node.
	now := time.Now()
	if now.Sub(checked) < recheckEvery {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	v, err := cl.rdb.Get(ctx, nodeKey(node)).Result()
	cl.mu.Lock()
	defer cl.mu.Unlock()
	cl.checked[node] = now
	if len(cl.checked) > 1024 {
		clear(cl.checked)
	}
	r, addr, found := strings.Cut(v, " ")
	if err != nil || !found {
		return false
	}
	cl.live[node] = nodeInfo{run: r, addr: addr}
	return r == run
}

// recheckEvery spaces the direct heartbeat checks of a node not (or not in
// that run) in the last heartbeat's list.
const recheckEvery = 200 * time.Millisecond

// liveNodes returns the live nodes and their runs.
func (cl *cluster) liveNodes() map[string]nodeInfo {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	m := make(map[string]nodeInfo, len(cl.live)+1)
	for n, i := range cl.live {
		m[n] = i
	}
	m[cl.node] = nodeInfo{run: cl.run, addr: cl.addr}
	return m
}

// nodeByAddr returns the live node other than us whose -sip-addr is addr.
func (cl *cluster) nodeByAddr(addr string) (string, bool) {
	if addr == "" || strings.EqualFold(addr, cl.addr) {
		return "", false
	}
	find := func() (string, bool) {
		cl.mu.Lock()
		defer cl.mu.Unlock()
		for n, i := range cl.live {
			if n != cl.node && strings.EqualFold(i.addr, addr) {
				return n, true
			}
		}
		return "", false
	}
	if n, ok := find(); ok {
		return n, true
	}
	// A node started since our last heartbeat: read them all now, at most
	// every recheckEvery.
	cl.mu.Lock()
	now := time.Now()
	due := now.Sub(cl.refreshed) >= recheckEvery
	if due {
		cl.refreshed = now
	}
	cl.mu.Unlock()
	if !due {
		return "", false
	}
	ctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
	defer cancel()
	if err := cl.refresh(ctx); err != nil {
		cl.log.Warn("nodes not read", "err", err)
	}
	return find()
}

// linkTo returns the link to live node, dialling it when there is none.
func (cl *cluster) linkTo(node string) (*peerLink, error) {
	cl.mu.Lock()
	i, ok := cl.live[node]
	if !ok || node == cl.node {
		cl.mu.Unlock()
		return nil, fmt.Errorf("node %q is not live", node)
	}
	if l := cl.out[i.addr]; l != nil {
		cl.mu.Unlock()
		return l, nil
	}
	cl.mu.Unlock()
	conn, err := net.DialTimeout("tcp", i.addr, peerDialTimeout)
	if err != nil {
		return nil, err
	}
	cl.mu.Lock()
	defer cl.mu.Unlock()
	if l := cl.out[i.addr]; l != nil { // dialled meanwhile
		_ = conn.Close()
		return l, nil
	}
	if cl.closed {
		_ = conn.Close()
		return nil, errors.New("cluster closed")
	}
	l := cl.newLinkLocked(conn, i.addr)
	cl.out[i.addr] = l
	return l, nil
}

func (cl *cluster) newLinkLocked(conn net.Conn, addr string) *peerLink {
	cl.nextID++
	l := &peerLink{id: peerIDBase | cl.nextID, addr: addr, conn: conn}
	if ap, err := netip.ParseAddrPort(conn.RemoteAddr().String()); err == nil {
		l.remote = ap
	}
	cl.links[l.id] = l
	cl.wg.Add(1)
	go cl.serve(l)
	return l
}

// link returns the live link id.
func (cl *cluster) link(id sipws.ConnID) (*peerLink, bool) {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	l, ok := cl.links[id]
	return l, ok
}

func (cl *cluster) accept() {
	defer cl.wg.Done()
	for {
		conn, err := cl.ln.Accept()
		if err != nil {
			return
		}
		cl.mu.Lock()
		if cl.closed || len(cl.links) >= maxPeerLinks {
			cl.mu.Unlock()
			_ = conn.Close()
			continue
		}
		cl.newLinkLocked(conn, "")
		cl.mu.Unlock()
	}
}

// serve reads the SIP messages of link l until it ends.
func (cl *cluster) serve(l *peerLink) {
	defer cl.wg.Done()
	br := bufio.NewReaderSize(l.conn, 16<<10) // the longest header line
	for {
		_ = l.conn.SetReadDeadline(time.Now().Add(peerIdle))
		data, err := readStreamMessage(br, maxMessageSize)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				cl.log.Info("node link ended", "link", l.remote, "err", err)
			}
			break
		}
		cl.p.handle(l, data)
	}
	_ = l.conn.Close()
	cl.mu.Lock()
	delete(cl.links, l.id)
	if l.addr != "" && cl.out[l.addr] == l {
		delete(cl.out, l.addr)
	}
	cl.mu.Unlock()
	cl.p.endpointGone(l.id)
}

// close leaves the cluster: the heartbeat key goes (the others stop using
// our bindings at their next heartbeat), the listener and links close.
func (cl *cluster) close() {
	cl.mu.Lock()
	if cl.closed {
		cl.mu.Unlock()
		return
	}
	cl.closed = true
	links := make([]*peerLink, 0, len(cl.links))
	for _, l := range cl.links {
		links = append(links, l)
	}
	cl.mu.Unlock()
	close(cl.stop)
	_ = cl.ln.Close()
	for _, l := range links {
		_ = l.conn.Close()
	}
	cl.wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	// Only our own run's key: a node started since under our name keeps its.
	delIfEqual.Run(ctx, cl.rdb, []string{nodeKey(cl.node)}, cl.run+" "+cl.addr)
}

var delIfEqual = redis.NewScript(`if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0`)

// readStreamMessage reads one SIP message from a stream (RFC 3261 §18.3):
// the start line and headers up to an empty line, then Content-Length bytes
// of body. Empty lines before a message (keepalives) are skipped. A message
// over max bytes, or one without Content-Length, is an error: the stream
// cannot be framed past it.
func readStreamMessage(br *bufio.Reader, max int) ([]byte, error) {
	var buf []byte
	length := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, errors.New("SIP header line too long")
			}
			return nil, err
		}
		if len(buf)+len(line) > max {
			return nil, errors.New("SIP message too large")
		}
		trimmed := strings.TrimRight(string(line), "\r\n")
		if trimmed == "" {
			if len(buf) == 0 {
				continue // keepalive CRLF
			}
			buf = append(buf, line...)
			break
		}
		buf = append(buf, line...)
		name, value, ok := strings.Cut(trimmed, ":")
		if ok {
			name = strings.TrimSpace(name)
			if strings.EqualFold(name, "Content-Length") || name == "l" {
				n, err := strconv.Atoi(strings.TrimSpace(value))
				if err != nil || n < 0 {
					return nil, errors.New("bad Content-Length")
				}
				length = n
			}
		}
	}
	if length < 0 {
		return nil, errors.New("no Content-Length on a stream")
	}
	if len(buf)+length > max {
		return nil, errors.New("SIP message too large")
	}
	start := len(buf)
	buf = append(buf, make([]byte, length)...)
	if _, err := io.ReadFull(br, buf[start:]); err != nil {
		return nil, err
	}
	return buf, nil
}

// pathURI is the Path of a binding held on this node for connection c: a
// flow-token URI of our -sip-addr.
func (cl *cluster) pathURI(tok string) string {
	return "sip:" + tok + "@" + cl.addr + ";transport=tcp;lr"
}

// parseRoute parses a Path or Record-Route URI into a Route header.
func parseRoute(uri string) (*sip.RouteHeader, error) {
	rh := &sip.RouteHeader{}
	if err := sip.ParseUri(uri, &rh.Address); err != nil {
		return nil, err
	}
	return rh, nil
}

// hostPort returns the host:port of u as in -sip-addr ("" without a port).
func hostPort(u *sip.Uri) string {
	if u.Port == 0 {
		return ""
	}
	return net.JoinHostPort(strings.Trim(u.Host, "[]"), strconv.Itoa(u.Port))
}
