package sipws

import (
	"io"
	"sync"
)

// readBuf is a connection's read buffer: a block from the server's pool,
// borrowed while the connection has a frame to read and given back while it
// idles. Only the read goroutine touches it.
type readBuf struct {
	pool *sync.Pool // of *[]byte blocks of Config.ReadBufferSize
	blk  *[]byte    // nil while the connection idles
	r, w int        // the unread bytes are (*blk)[r:w]
}

// buffered is the number of unread bytes.
func (b *readBuf) buffered() int { return b.w - b.r }

// bytes returns the unread bytes, in place (valid until the next read).
func (b *readBuf) bytes() []byte {
	if b.blk == nil {
		return nil
	}
	return (*b.blk)[b.r:b.w]
}

// discard drops n unread bytes (n ≤ buffered).
func (b *readBuf) discard(n int) { b.r += n }

// acquire borrows a block when the buffer has none.
func (b *readBuf) acquire() {
	if b.blk == nil {
		b.blk = b.pool.Get().(*[]byte)
		b.r, b.w = 0, 0
	}
}

// release gives the block back when nothing in it is unread.
func (b *readBuf) release() {
	if b.blk != nil && b.r == b.w {
		b.pool.Put(b.blk)
		b.blk = nil
		b.r, b.w = 0, 0
	}
}

// space makes room after the unread bytes, by moving them to the start of
// the block, and returns the free part. The buffer must hold a block.
func (b *readBuf) space() []byte {
	if b.r > 0 {
		b.w = copy(*b.blk, (*b.blk)[b.r:b.w])
		b.r = 0
	}
	return (*b.blk)[b.w:]
}

// fill reads more input into the read buffer: first what the HTTP server had
// read past the handshake, then the socket. It returns an error only when
// nothing was read. On plain TCP it waits for input holding no block when the
// buffer is empty, so that an idle connection costs no buffer.
func (c *Conn) fill() error {
	b := &c.rb
	if c.raw != nil && len(c.pre) == 0 {
		_, err := c.raw.read(b, nil)
		return err
	}
	b.acquire()
	n, err := c.readSource(b.space())
	b.w += n
	return err
}

// peek waits until n bytes (n ≤ ReadBufferSize) are in the read buffer and
// returns them, in place (valid until the next read).
func (c *Conn) peek(n int) ([]byte, error) {
	for c.rb.buffered() < n {
		if err := c.fill(); err != nil {
			return nil, err
		}
	}
	return c.rb.bytes()[:n], nil
}

// read reads into p: from the read buffer when it holds bytes, else straight
// from the source when p is at least as large as the buffer, else through
// the buffer. It returns an error only when nothing was read.
func (c *Conn) read(p []byte) (int, error) {
	if c.rb.buffered() == 0 {
		if len(p) >= c.srv.cfg.ReadBufferSize {
			return c.readDirect(p)
		}
		if err := c.fill(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.rb.bytes())
	c.rb.discard(n)
	return n, nil
}

// readDirect reads into p without the read buffer, which is empty.
func (c *Conn) readDirect(p []byte) (int, error) {
	if c.raw != nil && len(c.pre) == 0 {
		return c.raw.read(nil, p)
	}
	return c.readSource(p)
}

// readSource reads once into p from what the HTTP server had read past the
// handshake, else from nc. It returns an error only when nothing was read.
func (c *Conn) readSource(p []byte) (int, error) {
	if len(c.pre) > 0 {
		n := copy(p, c.pre)
		c.pre = c.pre[n:]
		return n, nil
	}
	for range maxEmptyReads {
		n, err := c.nc.Read(p)
		if n > 0 {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
	return 0, io.ErrNoProgress
}

// maxEmptyReads bounds reads that return neither bytes nor an error.
const maxEmptyReads = 100

// dropInput gives the read buffer back, discarding what it holds and what
// the HTTP server had read past the handshake; the connection reads no more
// frames.
func (c *Conn) dropInput() {
	c.rb.r = c.rb.w
	c.rb.release()
	c.pre = nil
}
