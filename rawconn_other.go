//go:build !linux

package sipws

import "net"

// rawConn is only for Linux; elsewhere reads go through net.Conn and every
// frame through the writer goroutine.
type rawConn struct{}

func newRawConn(net.Conn) *rawConn { return nil }

func (*rawConn) tryWrite([]byte) (int, error) { return 0, nil }

func (*rawConn) read(*readBuf, []byte) (int, error) { return 0, nil }

func (*rawConn) queued() int { return 0 }
