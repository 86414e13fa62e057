package main

// A minimal RFC 6455 client: just what the load generator needs, written out
// so that the client's own cost is known and small. Client frames are masked
// (§5.3) with a fresh key each; server frames must not be; the handshake
// offers the sub-protocol sip and checks Sec-WebSocket-Accept (§4.1).

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

const wsGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// Opcodes.
const (
	opCont  = 0x0
	opText  = 0x1
	opBin   = 0x2
	opClose = 0x8
	opPing  = 0x9
	opPong  = 0xA
)

// maxFrame bounds a frame the client accepts from the server.
const maxFrame = 1 << 16

// wsConn is one client connection.
type wsConn struct {
	nc  net.Conn
	br  *bufio.Reader
	out []byte // frame being written
	in  []byte // payload of the last frame read
}

// dialer opens TCP connections from a rotating set of loopback source
// addresses to a loopback target.
type dialer struct {
	target  netip.AddrPort
	host    string // Host header
	path    string
	sources []netip.Addr
	timeout time.Duration
}

func newDialer(target string, path string, nsources int, timeout time.Duration) (*dialer, error) {
	ap, err := netip.ParseAddrPort(target)
	if err != nil {
		return nil, fmt.Errorf("-addr %q: want IP:port: %w", target, err)
	}
	if !ap.Addr().Is4() || !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("-addr %q: only IPv4 loopback targets (127.0.0.0/8) are allowed", target)
	}
	if nsources < 1 || nsources > 250 {
		return nil, fmt.Errorf("-sources %d: want 1..250", nsources)
	}
	d := &dialer{target: ap, host: ap.String(), path: path, timeout: timeout}
	for i := range nsources {
		d.sources = append(d.sources, netip.AddrFrom4([4]byte{127, 0, 0, byte(2 + i)}))
	}
	return d, nil
}

// dial opens connection number i (which picks its source address) and does
// the WebSocket handshake within the dialer's timeout. rbuf is the size of
// its read buffer.
func (d *dialer) dial(i int, rbuf int) (*wsConn, error) {
	src := d.sources[i%len(d.sources)]
	nd := net.Dialer{
		LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)),
		Timeout:   d.timeout,
		Control:   bindNoPort,
	}
	nc, err := nd.Dial("tcp4", d.target.String())
	if err != nil {
		return nil, err
	}
	c := &wsConn{nc: nc, br: bufio.NewReaderSize(nc, rbuf)}
	if err := c.handshake(d.host, d.path, d.timeout); err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h).
const ipBindAddressNoPort = 24

// bindNoPort lets the kernel pick the source port at connect time, knowing
// the destination, instead of at bind time: binding a source address with
// port 0 otherwise needs a port unused by any socket on that address, which
// runs out (and slows down) long before the 4-tuples do.
func bindNoPort(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	}); err != nil {
		return err
	}
	return serr
}

// handshake sends the opening handshake and checks the 101.
func (c *wsConn) handshake(host, path string, timeout time.Duration) error {
	var raw [16]byte
	binary.LittleEndian.PutUint64(raw[:8], rand.Uint64())
	binary.LittleEndian.PutUint64(raw[8:], rand.Uint64())
	var keyb [24]byte
	base64.StdEncoding.Encode(keyb[:], raw[:])
	key := keyb[:]

	req := make([]byte, 0, 256)
	req = append(req, "GET "...)
	req = append(req, path...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, host...)
	req = append(req, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: "...)
	req = append(req, key...)
	req = append(req, "\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"...)

	_ = c.nc.SetDeadline(time.Now().Add(timeout))
	defer c.nc.SetDeadline(time.Time{})
	if _, err := c.nc.Write(req); err != nil {
		return fmt.Errorf("handshake: %w", err)
	}

	h := sha1.New()
	h.Write(key)
	h.Write([]byte(wsGUID))
	var sum [sha1.Size]byte
	var want [28]byte
	base64.StdEncoding.Encode(want[:], h.Sum(sum[:0]))

	line, err := c.readLine()
	if err != nil {
		return fmt.Errorf("handshake: status line: %w", err)
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 101 ")) && !bytes.Equal(line, []byte("HTTP/1.1 101")) {
		return fmt.Errorf("handshake: status %q, want 101", line)
	}
	var upgrade, connection, accept, protocol bool
	for n := 0; ; n++ {
		if n > 100 {
			return errors.New("handshake: more than 100 header lines")
		}
		line, err := c.readLine()
		if err != nil {
			return fmt.Errorf("handshake: headers: %w", err)
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return fmt.Errorf("handshake: malformed header line %q", line)
		}
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Upgrade")):
			upgrade = bytes.EqualFold(value, []byte("websocket"))
		case bytes.EqualFold(name, []byte("Connection")):
			for t := range bytes.SplitSeq(value, []byte(",")) {
				connection = connection || bytes.EqualFold(bytes.TrimSpace(t), []byte("upgrade"))
			}
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Accept")):
			if !bytes.Equal(value, want[:]) {
				return fmt.Errorf("handshake: Sec-WebSocket-Accept %q, want %q", value, want[:])
			}
			accept = true
		case bytes.EqualFold(name, []byte("Sec-WebSocket-Protocol")):
			if !bytes.Equal(value, []byte("sip")) {
				return fmt.Errorf("handshake: Sec-WebSocket-Protocol %q, want sip", value)
			}
			protocol = true
		}
	}
	switch {
	case !upgrade:
		return errors.New("handshake: no Upgrade: websocket in the 101")
	case !connection:
		return errors.New("handshake: no Connection: Upgrade in the 101")
	case !accept:
		return errors.New("handshake: no Sec-WebSocket-Accept in the 101")
	case !protocol:
		return errors.New("handshake: sub-protocol sip not negotiated")
	}
	return nil
}

// readLine reads one CRLF-terminated line of at most the reader's buffer.
func (c *wsConn) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if err != nil {
		return nil, err
	}
	line = bytes.TrimSuffix(line[:len(line)-1], []byte("\r"))
	return line, nil
}

// writeFrame sends one final frame with opcode op, masked with a fresh key.
func (c *wsConn) writeFrame(op byte, p []byte) error {
	b := append(c.out[:0], 0x80|op)
	switch n := len(p); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), uint64(n))
	}
	key := rand.Uint32()
	b = binary.LittleEndian.AppendUint32(b, key)
	start := len(b)
	b = append(b, p...)
	mask(b[start:], key)
	c.out = b
	_, err := c.nc.Write(b)
	return err
}

// mask XORs p with the 4-byte key (as laid out on the wire, little-endian
// in key), eight bytes at a time.
func mask(p []byte, key uint32) {
	k8 := uint64(key) | uint64(key)<<32
	i := 0
	for ; i+8 <= len(p); i += 8 {
		binary.LittleEndian.PutUint64(p[i:], binary.LittleEndian.Uint64(p[i:])^k8)
	}
	for j := 0; i < len(p); i, j = i+1, j+1 {
		p[i] ^= byte(key >> (8 * (j & 3)))
	}
}

// errProtocol is a frame the client does not accept.
var errProtocol = errors.New("protocol error")

// readFrame reads one frame; its payload is in c.in until the next call.
func (c *wsConn) readFrame() (op byte, fin bool, err error) {
	var hdr [2]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return 0, false, err
	}
	op, fin = hdr[0]&0x0f, hdr[0]&0x80 != 0
	if hdr[1]&0x80 != 0 {
		return op, fin, fmt.Errorf("%w: masked frame from the server", errProtocol)
	}
	n := uint64(hdr[1] & 0x7f)
	switch n {
	case 126:
		var ext [2]byte
		if _, err := io.ReadFull(c.br, ext[:]); err != nil {
			return op, fin, err
		}
		n = uint64(binary.BigEndian.Uint16(ext[:]))
	case 127:
		var ext [8]byte
		if _, err := io.ReadFull(c.br, ext[:]); err != nil {
			return op, fin, err
		}
		n = binary.BigEndian.Uint64(ext[:])
	}
	if n > maxFrame {
		return op, fin, fmt.Errorf("%w: %d-byte frame", errProtocol, n)
	}
	if uint64(cap(c.in)) < n {
		c.in = make([]byte, n)
	}
	c.in = c.in[:n]
	if _, err := io.ReadFull(c.br, c.in); err != nil {
		return op, fin, err
	}
	return op, fin, nil
}

// closeCode returns the status code of a close frame payload (1005 when it
// has none).
func closeCode(p []byte) int {
	if len(p) < 2 {
		return 1005
	}
	return int(binary.BigEndian.Uint16(p))
}

// closeHandshake sends a close frame with 1000, waits for the server's close
// frame, then for its FIN (RFC 6455 §7.1.1: the server closes the TCP
// connection first), and closes the socket, all within timeout.
func (c *wsConn) closeHandshake(timeout time.Duration) error {
	defer c.nc.Close()
	_ = c.nc.SetDeadline(time.Now().Add(timeout))
	var p [2]byte
	binary.BigEndian.PutUint16(p[:], 1000)
	if err := c.writeFrame(opClose, p[:]); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	for range 16 {
		op, _, err := c.readFrame()
		if err != nil {
			return fmt.Errorf("close: waiting for the close reply: %w", err)
		}
		if op == opClose {
			if code := closeCode(c.in); code != 1000 {
				return fmt.Errorf("close: server answered with code %d", code)
			}
			// Wait for the server's FIN.
			var b [64]byte
			for range 16 {
				if _, err := c.br.Read(b[:]); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return fmt.Errorf("close: waiting for the server's FIN: %w", err)
				}
			}
			return errors.New("close: data after the close frame")
		}
	}
	return errors.New("close: no close reply in 16 frames")
}

// abort closes the socket at once with a reset (no TIME_WAIT left behind).
func (c *wsConn) abort() {
	if tc, ok := c.nc.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.nc.Close()
}

// itoa is strconv.Itoa, kept short.
func itoa(n int) string { return strconv.Itoa(n) }
