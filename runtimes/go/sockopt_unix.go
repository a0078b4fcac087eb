//go:build !windows

package main

import "syscall"

var errnoNames = map[syscall.Errno]string{
	syscall.EADDRINUSE:    "EADDRINUSE",
	syscall.EADDRNOTAVAIL: "EADDRNOTAVAIL",
	syscall.EACCES:        "EACCES",
}

func setReuseAddr(fd uintptr) error {
	return syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
}

func flag(fd uintptr, level, name int) string {
	v, err := syscall.GetsockoptInt(int(fd), level, name)
	switch {
	case err != nil:
		return "?"
	case v != 0:
		return "1"
	}
	return "0"
}

func options(fd uintptr, v6 bool) []string {
	v6only := "-"
	if v6 {
		v6only = flag(fd, syscall.IPPROTO_IPV6, syscall.IPV6_V6ONLY)
	}
	return []string{
		"reuseaddr=" + flag(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR),
		"reuseport=" + flag(fd, syscall.SOL_SOCKET, soReusePort),
		"v6only=" + v6only,
		"exclusive=-",
	}
}
