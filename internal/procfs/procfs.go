// Package procfs reads what Herald's benchmarks and tests need to know
// about another process from Linux's /proc: its CPU time. The standard
// library has no call for another process's CPU, and a library for one
// field of one file is more than it is worth; the parsing (a command name
// in parentheses that may hold spaces, field offsets, USER_HZ) lives here
// once for herald bench and the tests.
package procfs

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// CPU is the user and system CPU process pid has used so far, from
// /proc/PID/stat.
func CPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name is in parentheses and may hold spaces: split after it.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("procfs: unexpected /proc stat format")
	}
	f := strings.Fields(string(b[i+1:]))
	// Fields after ")" start at field 3 (state); utime and stime are 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("procfs: short /proc stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, errors.New("procfs: /proc stat times: " + err.Error())
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}
