package client

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
)

// readBufferSize is the read buffer of a Conn without a dialer buffer.
const readBufferSize = 4096

// newSource returns the buffered reader the reader goroutine reads frames
// from. When the dialer returned a buffer (the server sends
// pusher:connection_established right after the 101, so the first frames are
// often already in it), that buffer, which wraps the connection, is kept as
// the read buffer for the connection's life: reading it first loses no frame,
// and swapping it for a fresh buffer of the same size once drained (handing
// it back with ws.PutReader) would gain nothing. Without one a buffer of the
// same size is allocated. Buffering matters: frames are read header first, a
// few bytes at a time.
func newSource(br *bufio.Reader, conn net.Conn) io.Reader {
	if br != nil {
		return br
	}
	return bufio.NewReaderSize(conn, readBufferSize)
}

// readLoop is the reader goroutine: it reads frames until the connection
// ends, then records why, closes c.events and the TCP connection.
func (c *Conn) readLoop(src io.Reader) {
	defer close(c.readerDone)
	err := c.readFrames(src)
	select {
	case <-c.closing:
		err = ErrClosed // closed locally: whatever the read saw is a consequence
	default:
	}
	c.termErr = err
	close(c.events)
	_ = c.conn.Close() // before stopWrites: see drop
	c.stopWrites()
}

// readFrames reads and dispatches frames; it returns why reading stopped.
func (c *Conn) readFrames(src io.Reader) error {
	rd := &wsutil.Reader{
		Source:         src,
		State:          ws.StateClientSide,
		MaxMessageSize: c.opt.MaxMessageSize,
	}
	rd.OnIntermediate = c.control
	for {
		h, err := rd.NextFrame()
		if err != nil {
			return c.readFailed(err)
		}
		if h.OpCode.IsControl() {
			if err := c.control(h, rd); err != nil {
				return err
			}
			continue
		}
		p, err := readPayload(rd, h)
		if err != nil {
			return c.readFailed(err)
		}
		received := time.Now()
		ev := decodeEvent(p)
		ev.Received = received
		if ev.Event == EventPing && c.autoPong.Load() {
			_ = c.SendRaw([]byte(`{"event":"pusher:pong","data":{}}`))
		}
		select {
		case c.events <- &ev:
		case <-c.closing:
			// Close was called: drop the event rather than block on a full
			// queue, so that the server's close frame can still be read.
		}
	}
}

// preallocLimit is how much of a peer-declared length readPayload trusts for
// allocation; beyond it the buffer grows as bytes arrive.
const preallocLimit = 32 << 10

// readPayload reads the rest of the message whose first frame is h.
func readPayload(rd io.Reader, h ws.Header) ([]byte, error) {
	buf := make([]byte, 0, max(min(h.Length, preallocLimit), 512))
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := rd.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return buf, err
		}
	}
}

// control handles one control frame whose payload is read from r. It returns
// a non-nil error when the connection must end (a close frame).
func (c *Conn) control(h ws.Header, r io.Reader) error {
	p, err := io.ReadAll(r) // at most 125 bytes: ws.CheckHeader ran
	if err != nil {
		return c.readFailed(err)
	}
	if fn := c.opt.OnControl; fn != nil {
		fn(h.OpCode, p)
	}
	switch h.OpCode {
	case ws.OpPing:
		if c.autoPong.Load() {
			_ = c.SendFrame(ws.OpPong, true, p)
		}
		return nil
	case ws.OpClose:
		code, reason := ws.ParseCloseFrameData(p)
		// RFC 6455 5.5.1: answer with a close frame, echoing the status code.
		var body []byte
		if !code.Empty() {
			body = ws.NewCloseFrameBody(code, "")
		}
		c.writeClose(body)
		if code.Empty() {
			code = ws.StatusNoStatusRcvd
		}
		return &CloseError{Code: int(code), Reason: reason}
	default: // pong
		return nil
	}
}

// readFailed turns a read error into the connection's terminal error. Frames
// that break RFC 6455 fail the connection with a close frame as the RFC asks.
func (c *Conn) readFailed(err error) error {
	var (
		pe ws.ProtocolError
		ce *CloseError
	)
	switch {
	case errors.As(err, &ce):
		return ce // a close frame between fragments, from control
	case errors.As(err, &pe),
		errors.Is(err, ws.ErrHeaderLengthMSB),
		errors.Is(err, ws.ErrHeaderLengthUnexpected):
		c.writeClose(ws.NewCloseFrameBody(ws.StatusProtocolError, ""))
		return fmt.Errorf("client: server broke RFC 6455: %w", err)
	case errors.Is(err, wsutil.ErrMessageTooLarge),
		errors.Is(err, wsutil.ErrFrameTooLarge):
		c.writeClose(ws.NewCloseFrameBody(ws.StatusMessageTooBig, ""))
		return fmt.Errorf("client: read: %w", err)
	default:
		return &CloseError{Code: int(ws.StatusAbnormalClosure), Reason: err.Error()}
	}
}
