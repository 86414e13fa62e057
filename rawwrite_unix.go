//go:build unix

package sipws

import (
	"errors"
	"net"
	"syscall"
)

// rawWriter writes to a plain TCP socket without waiting: the sender's
// goroutine tries a non-blocking write before handing a frame to a writer
// goroutine. Its callback is bound once, so a write allocates nothing. It is
// used under Conn.sockMu.
type rawWriter struct {
	rc  syscall.RawConn
	fn  func(fd uintptr) bool
	b   []byte
	n   int
	err error
}

// newRawWriter returns a rawWriter for nc when it is plain TCP, else nil.
func newRawWriter(nc net.Conn) *rawWriter {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &rawWriter{rc: rc}
	w.fn = w.write
	return w
}

func (w *rawWriter) write(fd uintptr) bool {
	for w.n < len(w.b) {
		k, e := syscall.Write(int(fd), w.b[w.n:])
		switch {
		case errors.Is(e, syscall.EINTR):
			continue
		case errors.Is(e, syscall.EAGAIN):
			return true
		case e != nil:
			w.err = e
			return true
		}
		w.n += k
	}
	return true
}

// tryWrite writes as much of b as the socket takes now, without waiting:
// it returns how much that was (0 when the socket buffer is full).
func (w *rawWriter) tryWrite(b []byte) (int, error) {
	w.b, w.n, w.err = b, 0, nil
	if err := w.rc.Write(w.fn); err != nil && w.err == nil {
		w.err = err
	}
	n, err := w.n, w.err
	w.b, w.err = nil, nil
	return n, err
}
