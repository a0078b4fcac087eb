//go:build darwin || freebsd || netbsd || openbsd || dragonfly

package main

import "syscall"

const soReusePort = syscall.SO_REUSEPORT
