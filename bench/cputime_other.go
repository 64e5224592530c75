//go:build !linux

package main

import "time"

var processStart = time.Now()

// threadCPU falls back to wall time where no per-thread CPU clock is
// wired up; on a quiet machine it approximates the CPU time.
func threadCPU() time.Duration {
	return time.Since(processStart)
}

// cpuClockName says in the report what threadCPU measures.
const cpuClockName = "wall time (no per-thread CPU clock on this OS)"
