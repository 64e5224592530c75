//go:build linux

package main

import (
	"syscall"
	"time"
	"unsafe"
)

// clockThreadCPUTimeID is Linux's CLOCK_THREAD_CPUTIME_ID.
const clockThreadCPUTimeID = 3

// threadCPU returns the CPU time the calling OS thread has used. Callers
// lock their goroutine to its thread, so differences measure exactly their
// own work (the garbage collector's background workers run elsewhere and
// are not counted; its assists are).
func threadCPU() time.Duration {
	var ts syscall.Timespec
	_, _, errno := syscall.Syscall(syscall.SYS_CLOCK_GETTIME, clockThreadCPUTimeID, uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		return 0
	}
	return time.Duration(ts.Nano())
}

// cpuClockName says in the report what threadCPU measures.
const cpuClockName = "CLOCK_THREAD_CPUTIME_ID of the side's locked OS thread"
