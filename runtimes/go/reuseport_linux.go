package main

// SO_REUSEPORT from asm-generic/socket.h (the syscall package lacks it on Linux).
const soReusePort = 0xf
