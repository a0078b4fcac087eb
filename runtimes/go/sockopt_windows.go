package main

import (
	"syscall"
	"unsafe"
)

// SO_EXCLUSIVEADDRUSE is ~SO_REUSEADDR (winsock2.h).
const soExclusiveAddrUse = ^syscall.SO_REUSEADDR

var errnoNames = map[syscall.Errno]string{
	10048: "EADDRINUSE",
	10049: "EADDRNOTAVAIL",
	10013: "EACCES",
}

func setReuseAddr(fd uintptr) error {
	return syscall.SetsockoptInt(syscall.Handle(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
}

func flag(fd uintptr, level, name int) string {
	var v int32
	size := int32(unsafe.Sizeof(v))
	err := syscall.Getsockopt(syscall.Handle(fd), int32(level), int32(name), (*byte)(unsafe.Pointer(&v)), &size)
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
		"reuseport=-",
		"v6only=" + v6only,
		"exclusive=" + flag(fd, syscall.SOL_SOCKET, soExclusiveAddrUse),
	}
}
