// Go's echo server as the net package documents it (net.Listen and an
// Accept loop), and the recipe people copy to "fix" a restart:
// net.ListenConfig with a Control function that sets SO_REUSEADDR.
//
// Usage: echo-go listen|listenconfig-reuseaddr PORT [any|loopback]
// It prints the line protocol of runtimes/README.md.
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

func listen(recipe, address string) (net.Listener, error) {
	switch recipe {
	case "listen":
		return net.Listen("tcp", address)
	case "listenconfig-reuseaddr":
		lc := net.ListenConfig{
			Control: func(network, address string, c syscall.RawConn) error {
				var opErr error
				if err := c.Control(func(fd uintptr) {
					opErr = setReuseAddr(fd)
				}); err != nil {
					return err
				}
				return opErr
			},
		}
		return lc.Listen(context.Background(), "tcp", address)
	}
	return nil, fmt.Errorf("unknown recipe %q", recipe)
}

func echo(conn net.Conn) {
	defer conn.Close()
	io.Copy(conn, conn)
}

// One socket of the ready line: address and options read with getsockopt.
func describe(ln net.Listener) string {
	addr := ln.Addr().(*net.TCPAddr)
	fields := []string{net.JoinHostPort(addr.IP.String(), strconv.Itoa(addr.Port))}
	raw, err := ln.(*net.TCPListener).SyscallConn()
	if err != nil {
		return fields[0]
	}
	raw.Control(func(fd uintptr) {
		fields = append(fields, options(fd, addr.IP.To4() == nil)...)
	})
	return strings.Join(fields, ",")
}

func errorName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name, ok := errnoNames[errno]; ok {
			return name
		}
		return fmt.Sprintf("errno%d", int(errno))
	}
	return "error"
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: echo-go listen|listenconfig-reuseaddr PORT [any|loopback]")
		os.Exit(2)
	}
	address := ":" + os.Args[2] // all interfaces, as the net docs write it
	if len(os.Args) > 3 && os.Args[3] == "loopback" {
		address = "127.0.0.1:" + os.Args[2]
	}
	ln, err := listen(os.Args[1], address)
	if err != nil {
		fmt.Println("failed", errorName(err), err)
		os.Exit(1)
	}
	fmt.Println("ready", strings.TrimPrefix(runtime.Version(), "go"), describe(ln))
	go func() {
		// The end of stdin is the harness's word to stop.
		io.Copy(io.Discard, bufio.NewReader(os.Stdin))
		os.Exit(0)
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			os.Exit(1)
		}
		fmt.Println("accepted")
		go echo(conn)
	}
}
