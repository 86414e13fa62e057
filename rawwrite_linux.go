//go:build linux

package sipws

import (
	"errors"
	"net"
	"os"
	"syscall"
	"unsafe"
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

	// The read goroutine's own: waiting for input without a buffer.
	readyFn func(fd uintptr) bool
	peek    [1]byte
	peekErr syscall.Errno // an error the peek consumed (the socket reports it once)
	waited  bool          // the runtime waited for readability since the peek
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
	w.readyFn = w.ready
	return w
}

// waitReadable blocks until the socket has input (or an error, a deadline or
// the end of the stream), holding no buffer: an idle connection waits here,
// with its read buffer back in the pool and a short stack. A spurious wake is
// harmless: the read that follows blocks as usual.
func (w *rawWriter) waitReadable() error {
	w.peekErr, w.waited = 0, false
	if err := w.rc.Read(w.readyFn); err != nil {
		return err
	}
	if w.peekErr != 0 {
		return &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("recvfrom", w.peekErr)}
	}
	return nil
}

// ready reports whether the socket has input, the end of the stream or an
// error to read, by peeking at one byte without waiting; false makes the
// runtime wait for the socket to become readable and ask again. (Bytes that
// arrived before the wait raise no new readiness event: they must be looked
// for.)
func (w *rawWriter) ready(fd uintptr) bool {
	if w.waited {
		// Woken by a readiness event: input is there (or the end of the
		// stream, or an error). The read that follows finds out, so no
		// second peek is spent; a spurious wake only makes that read block.
		return true
	}
	for {
		_, _, e := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&w.peek[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			w.waited = true
			return false
		case 0:
		default:
			w.peekErr = e
		}
		return true // a byte, the end of the stream, or an error
	}
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
