//go:build !linux

package sipws

import "net"

// rawWriter is only for Unix sockets; elsewhere every frame goes through the
// writer goroutine.
type rawWriter struct{}

func newRawWriter(net.Conn) *rawWriter { return nil }

func (*rawWriter) tryWrite([]byte) (int, error) { return 0, nil }

func (*rawWriter) waitReadable() error { return nil }
