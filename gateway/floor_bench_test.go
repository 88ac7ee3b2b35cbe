package gateway

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkLoopbackFloor is what one delivery costs the kernel on this
// machine, with no Herald code in the way: a bare loop of write(2) of one
// 110-byte frame (a small Pusher event) to each of 10,000 loopback TCP
// sockets, in bursts of one frame per socket five times a second (the
// latency scenario of docs/benchmarks.md), read by another process with
// epoll, one read(2) per frame. It reports the writer's and the reader's
// CPU per frame and how long one burst of 10,000 writes takes on one
// thread, the numbers to hold the edge's own figures against
// (herald_delivery and the bench's server CPU per delivery): what the
// edge spends above them is its own; below them no edge can go on this
// kernel. Run with a count of writes that fills whole bursts:
//
//	go test ./gateway/ -run '^$' -bench LoopbackFloor -benchtime 500000x
func BenchmarkLoopbackFloor(b *testing.B) {
	const conns = 10000
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	reader := exec.Command(os.Args[0], "-test.run=^$")
	reader.Env = append(os.Environ(), floorReaderEnv+"="+ln.Addr().String())
	out, err := reader.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	reader.Stderr = os.Stderr
	if err := reader.Start(); err != nil {
		b.Fatal(err)
	}
	files := make([]*os.File, 0, conns) // the descriptors written; closing them ends the reader
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
		_ = reader.Process.Kill()
		_ = reader.Wait()
	}()
	for len(files) < conns {
		c, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		f, err := c.(*net.TCPConn).File()
		_ = c.Close()
		if err != nil {
			b.Fatal(err)
		}
		files = append(files, f)
	}
	fds := make([]int, len(files))
	for i, f := range files {
		fds[i] = int(f.Fd())
		if err := unix.SetNonblock(fds[i], false); err != nil {
			b.Fatal(err)
		}
	}
	time.Sleep(500 * time.Millisecond) // the reader's last dials settle
	frame := make([]byte, 110)
	const every = 200 * time.Millisecond
	var busy time.Duration
	bursts := 0
	b.ResetTimer()
	cpu0, start := processCPU(), time.Now()
	for i := 0; i < b.N; {
		burstStart := time.Now()
		for j := 0; j < conns && i < b.N; j, i = j+1, i+1 {
			if _, err := unix.Write(fds[j], frame); err != nil {
				b.Fatalf("write: %v", err)
			}
		}
		busy += time.Since(burstStart)
		bursts++
		time.Sleep(time.Until(start.Add(time.Duration(bursts) * every)))
	}
	cpu := processCPU() - cpu0
	b.StopTimer()
	for _, f := range files {
		_ = f.Close()
	}
	files = nil
	var reads int
	var readerCPU time.Duration
	if _, err := fmt.Fscan(bufio.NewReader(out), &reads, &readerCPU); err != nil {
		b.Fatalf("reader's report: %v", err)
	}
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "writer-cpu-ns/frame")
	if reads > 0 {
		b.ReportMetric(float64(readerCPU.Nanoseconds())/float64(reads), "reader-cpu-ns/read")
	}
	b.ReportMetric(float64(busy.Milliseconds())/float64(bursts), "ms/burst")
}

// floorReaderEnv, set, makes this test binary BenchmarkLoopbackFloor's
// reader: it dials the address the variable holds (10,000 times) and reads
// until every socket is closed.
const floorReaderEnv = "HERALD_FLOOR_READER"

// floorReader runs the reader when this process is one (see
// floorReaderEnv) and reports whether it was.
func floorReader() bool {
	addr := os.Getenv(floorReaderEnv)
	if addr == "" {
		return false
	}
	if err := readFloor(addr, 10000); err != nil {
		fmt.Fprintln(os.Stderr, "floor reader:", err)
		os.Exit(1)
	}
	return true
}

// readFloor dials n sockets to addr, reads them with one epoll loop until
// the writer closes them all, and prints the number of reads with data and
// the CPU they took (from the first wake-up on).
func readFloor(addr string, n int) error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	var files []*os.File
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		f, err := c.(*net.TCPConn).File()
		_ = c.Close()
		if err != nil {
			return err
		}
		files = append(files, f)
		fd := int(f.Fd())
		if err := unix.SetNonblock(fd, true); err != nil {
			return err
		}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return err
		}
	}
	events := make([]unix.EpollEvent, 256)
	buf := make([]byte, 64<<10)
	var reads, closed int
	var cpu0 time.Duration
	for closed < n {
		k, err := unix.EpollWait(ep, events, -1)
		if err != nil {
			continue // EINTR
		}
		if cpu0 == 0 {
			cpu0 = processCPU()
		}
		for _, e := range events[:k] {
			m, err := unix.Read(int(e.Fd), buf)
			switch {
			case m > 0:
				reads++
			case err == unix.EAGAIN:
			default: // closed by the writer
				_ = unix.EpollCtl(ep, unix.EPOLL_CTL_DEL, int(e.Fd), nil)
				closed++
			}
		}
	}
	fmt.Println(reads, int64(processCPU()-cpu0))
	for _, f := range files {
		_ = f.Close()
	}
	return nil
}

// processCPU is the user and system CPU this process has used.
func processCPU() time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
