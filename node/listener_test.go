package node

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails with EMFILE a few times before accepting.
type flakyListener struct {
	net.Listener
	fails int
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.fails > 0 {
		f.fails--
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	return f.Listener.Accept()
}

func TestAcceptSurvivesDescriptorExhaustion(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := &patientListener{Listener: &flakyListener{Listener: ln, fails: 3}, log: quiet}
	defer l.Close()
	go func() {
		if c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second); err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("accept gave up: %v", err)
	}
	c.Close()
	if l.exhausts.Load() != 3 {
		t.Fatalf("%d exhausted accepts, want 3", l.exhausts.Load())
	}
	// A closed listener still ends Accept.
	l.Close()
	if _, err := l.Accept(); err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("accept on a closed listener: %v", err)
	}
}
