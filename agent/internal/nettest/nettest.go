// Package nettest has the network fixtures the probe's tests share.
package nettest

import (
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BlackHole is a local port that connects nobody: a listening socket with a backlog of 0
// whose one queue slot is taken, so the kernel drops every further SYN and a client's connect
// times out, as towards a firewalled address (a closed port would refuse at once). Both
// sockets close when the test ends.
func BlackHole(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	filler, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("fill the queue of %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = filler.Close() })
	return addr
}

// Serve runs handle for each connection to a listener on 127.0.0.1, in a goroutine of its
// own, closing the connection after, and returns the listener's address; the listener and
// every handler end with the test.
func Serve(t testing.TB, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				handle(c)
				_ = c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}
