//go:build linux

package sipws

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawConn reads and writes a plain TCP socket through its file descriptor,
// inside the runtime's poller callbacks. Writing, the sender's goroutine
// tries a non-blocking write before handing a frame to a writer goroutine.
// Reading, one read(2) both waits for input and takes it, and an idle
// connection waits holding no read buffer. Its callbacks are bound once, so
// neither allocates.
type rawConn struct {
	rc syscall.RawConn

	// Writing, under Conn.sockMu.
	writeFn func(fd uintptr) bool
	b       []byte
	n       int
	err     error

	// Reading, the read goroutine's own.
	readFn func(fd uintptr) bool
	inqFn  func(fd uintptr) // queued's callback; its count goes to rn
	rb     *readBuf         // read into its free space, borrowing a block; or
	dst    []byte           // read into this
	rn     int              // bytes read; 0 is the end of the stream
	rerr   error            // the read's error
}

// newRawConn returns a rawConn for nc when it is plain TCP, else nil.
func newRawConn(nc net.Conn) *rawConn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &rawConn{rc: rc}
	w.writeFn = w.write
	w.readFn = w.readable
	w.inqFn = w.countQueued
	return w
}

// queued returns how many bytes wait in the socket's receive queue: bytes
// that have arrived and can be read without waiting (0 when it cannot tell).
func (w *rawConn) queued() int {
	w.rn = 0
	if w.rc.Control(w.inqFn) != nil {
		return 0
	}
	n := w.rn
	w.rn = 0
	return n
}

// countQueued is queued's callback: the FIONREAD ioctl (TIOCINQ).
func (w *rawConn) countQueued(fd uintptr) {
	var n int32
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, syscall.TIOCINQ, uintptr(unsafe.Pointer(&n)))
	if e == 0 && n > 0 {
		w.rn = int(n)
	}
}

// read reads once, waiting for input (up to the read deadline): into the
// free space of rb when rb is not nil, else into p. It returns io.EOF at the
// end of the stream and an error only when nothing was read. Reading into rb
// borrows a block only while there is something to read: when the socket
// has nothing and rb nothing unread, the block goes back to the pool for the
// wait.
func (w *rawConn) read(rb *readBuf, p []byte) (int, error) {
	w.rb, w.dst, w.rn, w.rerr = rb, p, 0, nil
	err := w.rc.Read(w.readFn)
	n, rerr := w.rn, w.rerr
	w.rb, w.dst, w.rerr = nil, nil, nil
	switch {
	case err != nil:
		return 0, err
	case rerr != nil:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", rerr)}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// readable is read's callback: false makes the runtime wait for the socket
// to become readable and call it again.
func (w *rawConn) readable(fd uintptr) bool {
	p := w.dst
	if w.rb != nil {
		w.rb.acquire()
		p = w.rb.space()
	}
	for {
		n, err := syscall.Read(int(fd), p)
		switch err {
		case nil:
			w.rn = n
			if w.rb != nil {
				w.rb.w += n
			}
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			if w.rb != nil {
				w.rb.release()
			}
			return false
		default:
			w.rerr = err
		}
		return true
	}
}

func (w *rawConn) write(fd uintptr) bool {
	for w.n < len(w.b) {
		k, e := syscall.Write(int(fd), w.b[w.n:])
		switch e {
		case nil:
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return true
		default:
			w.err = e
			return true
		}
		w.n += k
	}
	return true
}

// tryWrite writes as much of b as the socket takes now, without waiting:
// it returns how much that was (0 when the socket buffer is full).
func (w *rawConn) tryWrite(b []byte) (int, error) {
	w.b, w.n, w.err = b, 0, nil
	if err := w.rc.Write(w.writeFn); err != nil && w.err == nil {
		w.err = err
	}
	n, err := w.n, w.err
	w.b, w.err = nil, nil
	return n, err
}
