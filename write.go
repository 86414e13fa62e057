package sipws

import (
	"fmt"
	"net"
	"time"
	"unicode/utf8"
)

// outFrame is a complete frame waiting to be written.
type outFrame struct {
	b       []byte
	data    bool    // a data frame (for the per-sub-protocol counters)
	pong    bool    // a Pong answering a Ping: a later one may replace it
	scratch *[]byte // the server's pooled block b is in: b is copied before it waits
}

// own makes f's bytes its own, out of the pooled block, which goes back to
// the pool; the frame can then wait in the queue.
func (f *outFrame) own(s *Server) {
	if f.scratch != nil {
		f.b = append([]byte(nil), f.b...)
		s.putScratch(f)
	}
}

// Send sends data as one message: a text frame when data is valid UTF-8, a
// binary frame otherwise (RFC 7118 §4.2, RFC 7977). It copies data and returns
// without waiting for the peer. It fails with ErrClosed once the connection is
// closing, ErrMessageTooBig past Config.MaxMessageSize, and ErrSendQueueFull
// when the peer does not read (the connection is then closed).
func (c *Conn) Send(data []byte) error {
	typ := MessageBinary
	if utf8.Valid(data) {
		typ = MessageText
	}
	return c.send(typ, data)
}

// SendMessage sends data as one message of the given type. A Text message
// must be valid UTF-8.
func (c *Conn) SendMessage(typ MessageType, data []byte) error {
	switch typ {
	case MessageText:
		if !utf8.Valid(data) {
			return fmt.Errorf("sipws: send on %d: text message is not valid UTF-8", c.id)
		}
	case MessageBinary:
	default:
		return fmt.Errorf("sipws: send on %d: unknown message type %d", c.id, typ)
	}
	return c.send(typ, data)
}

// send is SendMessage once the type is known to fit the data.
func (c *Conn) send(typ MessageType, data []byte) error {
	if int64(len(data)) > c.srv.cfg.MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, the limit is %d", ErrMessageTooBig, len(data), c.srv.cfg.MaxMessageSize)
	}
	if c.dfl != nil && len(data) >= deflateMin {
		if sent, err := c.sendCompressed(typ, data); sent {
			return err
		}
	}
	f := outFrame{data: true}
	if c.raw != nil && len(data) <= scratchSize-maxHeaderLen {
		// Built in a pooled block: the frame usually goes out at once, and
		// is copied only if it must wait.
		f.scratch = c.srv.scratch.Get().(*[]byte)
		f.b = appendDataFrame((*f.scratch)[:0], typ, data)
	} else {
		f.b = dataFrame(typ, data)
	}
	if err := c.enqueue(f); err != nil {
		return err
	}
	if o := c.srv.obs; o != nil {
		o.MessageSent(c.sp, len(data))
	}
	return nil
}

// sendCompressed sends data compressed (permessage-deflate). It returns
// false, having sent nothing, when data does not shrink or cannot be
// compressed for the peer's window: it then goes as it is.
func (c *Conn) sendCompressed(typ MessageType, data []byte) (bool, error) {
	sent, err := c.queueCompressed(typ, data)
	if sent && err == nil {
		if o := c.srv.obs; o != nil {
			o.MessageSent(c.sp, len(data))
		}
	}
	return sent, err
}

// queueCompressed compresses data and queues it, with the connection's
// history held from one to the other, so that frames enter the queue in
// the order their bytes entered the history.
func (c *Conn) queueCompressed(typ MessageType, data []byte) (bool, error) {
	d := c.dfl
	d.mu.Lock()
	defer d.mu.Unlock()
	f := outFrame{data: true}
	var b []byte
	if c.raw != nil && len(data) <= scratchSize-maxHeaderLen {
		f.scratch = c.srv.scratch.Get().(*[]byte)
		b = (*f.scratch)[:maxHeaderLen]
	} else {
		b = make([]byte, maxHeaderLen, maxHeaderLen+len(data))
	}
	out, ok := d.compress(b, data)
	if !ok {
		c.srv.putScratch(&f)
		return false, nil
	}
	if f.scratch != nil && cap(out) != cap(*f.scratch) {
		// Grew out of the pooled block: the frame is in its own array.
		c.srv.putScratch(&f)
	}
	f.b = compressedFrame(out, typ)
	if err := c.enqueue(f); err != nil {
		return true, err
	}
	d.sent(data)
	return true, nil
}

// Ping sends a Ping frame with data (at most 125 bytes) as payload. It does
// not wait for the Pong; the Pong's round-trip time shows in Registry.Dump.
func (c *Conn) Ping(data []byte) error {
	if len(data) > maxControlPayload {
		return errControlTooLong
	}
	// Note the Ping before it can go out, so that no Pong can come first.
	c.srv.ka.pingSent(c)
	if err := c.enqueue(outFrame{b: controlFrame(opPing, data)}); err != nil {
		c.ka.awaiting.Store(false)
		return err
	}
	return nil
}

// Pong sends an unsolicited Pong frame with data (at most 125 bytes): a
// one-way heartbeat (RFC 6455 §5.5.3).
func (c *Conn) Pong(data []byte) error {
	if len(data) > maxControlPayload {
		return errControlTooLong
	}
	return c.enqueue(outFrame{b: controlFrame(opPong, data)})
}

// pongReply queues the answer to a Ping (RFC 6455 §5.5.2): also while our
// own close handshake is under way — only data frames stop after a close
// frame (§5.5.1) — but not after the peer's close. When an earlier answer is
// still waiting at the end of the queue, it is replaced rather than joined
// (§5.5.3 lets the last Ping alone be answered), so that a peer that floods
// Pings and reads nothing holds one Pong, not a pile of them.
func (c *Conn) pongReply(p []byte) {
	f := outFrame{b: controlFrame(opPong, p), pong: true}
	c.wmu.Lock()
	switch {
	case c.state == stateClosed:
		c.wmu.Unlock()
		return
	case len(c.queue) > 0 && c.queue[len(c.queue)-1].pong:
		last := &c.queue[len(c.queue)-1]
		c.queued += len(f.b) - len(last.b)
		*last = f
		c.wmu.Unlock()
		return
	case c.raw != nil && !c.writing && len(c.queue) == 0:
		c.writeNow(f)
		return
	}
	c.pushLocked(f)
	c.wmu.Unlock()
}

// enqueue adds a frame to the send queue and makes sure a writer runs. A
// control frame is not held to the queue bound.
func (c *Conn) enqueue(f outFrame) error {
	c.wmu.Lock()
	if c.state != stateOpen {
		c.wmu.Unlock()
		c.srv.putScratch(&f)
		return fmt.Errorf("%w (connection %d)", ErrClosed, c.id)
	}
	if f.data && c.queued > 0 && c.queued+len(f.b) > c.srv.cfg.SendQueueSize {
		queued := c.queued
		c.wmu.Unlock()
		c.srv.putScratch(&f)
		err := fmt.Errorf("%w: connection %d has %d bytes waiting, the bound is %d", ErrSendQueueFull, c.id, queued, c.srv.cfg.SendQueueSize)
		c.abort(CauseSlowConsumer, ClosePolicyViolation, "send queue full", err)
		return err
	}
	if c.raw != nil && !c.writing && len(c.queue) == 0 {
		c.writeNow(f)
		return nil
	}
	c.pushLocked(f)
	c.wmu.Unlock()
	return nil
}

// writeNow writes f from the caller's goroutine as far as the socket takes it
// without waiting, and leaves the rest, and whatever was queued meanwhile, to
// a writer goroutine. c.wmu is held on entry and released on return. Most
// frames go out this way, with no goroutine and no copy of the queue.
func (c *Conn) writeNow(f outFrame) {
	// The caller is the writer for now: counted like a writer goroutine, so
	// that the end of the connection waits for it.
	c.writing = true
	c.wwg.Add(1)
	defer c.wwg.Done()
	c.wmu.Unlock()
	c.sockMu.Lock()
	n, err := c.raw.tryWrite(f.b)
	c.sockMu.Unlock()
	if err != nil {
		c.srv.putScratch(&f)
		c.writeFailed(err)
		return
	}
	c.wmu.Lock()
	if n == len(f.b) {
		var data uint64
		if f.data {
			data = 1
		}
		c.srv.stats.countTx(c.sp, 1, data)
	} else {
		// The rest of the frame goes first; never as a Pong that a later
		// one could replace.
		f.b = f.b[n:]
		f.own(c.srv)
		c.queue = append(c.queue, outFrame{})
		copy(c.queue[1:], c.queue)
		c.queue[0] = outFrame{b: f.b, data: f.data}
		c.queued += len(f.b)
	}
	c.srv.putScratch(&f)
	if len(c.queue) == 0 {
		c.writing = false
	} else {
		c.wwg.Add(1)
		go c.writeLoop()
	}
	c.wmu.Unlock()
}

// pushLocked appends f and starts a writer when none runs. c.wmu is held.
func (c *Conn) pushLocked(f outFrame) {
	f.own(c.srv)
	c.queue = append(c.queue, f)
	c.queued += len(f.b)
	if !c.writing {
		c.writing = true
		c.wwg.Add(1)
		go c.writeLoop()
	}
}

// writeLoop writes the queue until it is empty. At most one runs per
// connection; the connection's read goroutine waits for it before it ends.
func (c *Conn) writeLoop() {
	defer c.wwg.Done()
	for {
		c.wmu.Lock()
		batch := c.queue
		if len(batch) == 0 {
			c.queue, c.queued, c.writing = c.queue[:0], 0, false
			c.wmu.Unlock()
			return
		}
		c.queue, c.spare = c.spare[:0], nil
		c.wmu.Unlock()

		n, err := c.writeFrames(batch)

		clear(batch)
		c.wmu.Lock()
		c.queued -= n
		c.spare = batch[:0]
		c.wmu.Unlock()
		if err != nil {
			c.writeFailed(err)
			return
		}
	}
}

// writeFailed ends the connection after a failed write (CauseWriteFailure)
// and empties the queue: the writer stops, and nothing more is written.
func (c *Conn) writeFailed(err error) {
	c.abort(CauseWriteFailure, CloseAbnormal, "", fmt.Errorf("sipws: write to connection %d: %w", c.id, err))
	c.wmu.Lock()
	clear(c.queue)
	c.queue, c.queued, c.writing = c.queue[:0], 0, false
	c.wmu.Unlock()
}

// writeFrames writes frames to the socket in one go, with the write
// deadline, and counts them. It returns the bytes the frames held.
func (c *Conn) writeFrames(frames []outFrame) (int, error) {
	var total, data int
	bufs := make(net.Buffers, 0, len(frames))
	for _, f := range frames {
		bufs = append(bufs, f.b)
		total += len(f.b)
		if f.data {
			data++
		}
	}
	c.sockMu.Lock()
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	_, err := bufs.WriteTo(c.nc)
	if err == nil && c.raw != nil {
		// A deadline left in the past would fail the next direct write.
		_ = c.nc.SetWriteDeadline(time.Time{})
	}
	c.sockMu.Unlock()
	if err == nil {
		c.srv.stats.countTx(c.sp, uint64(len(frames)), uint64(data))
	}
	return total, err
}

// scratchSize is the size of the pooled blocks data frames are built in when
// they can be written at once: room for a SIP request with a WebRTC SDP.
const scratchSize = 8 << 10

// putScratch gives f's pooled block back, if it has one.
func (s *Server) putScratch(f *outFrame) {
	if f.scratch != nil {
		s.scratch.Put(f.scratch)
		f.scratch = nil
	}
}
