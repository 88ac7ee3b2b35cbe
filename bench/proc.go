package bench

import (
	"bufio"
	"bytes"
	"net"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"herald/internal/procfs"
)

// procStat is what the bench reads about the server process.
type procStat struct {
	cpu    float64 // user+system seconds
	rssKiB int64   // VmRSS
	hwmKiB int64   // VmHWM, the peak RSS
}

// readProcStat reads /proc/PID/stat (CPU) and /proc/PID/status (memory).
func readProcStat(pid int) (procStat, error) {
	var st procStat
	cpu, err := procfs.CPU(pid)
	if err != nil {
		return st, err
	}
	st.cpu = cpu.Seconds()
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return st, err
	}
	kv := parseKiB(status)
	st.rssKiB, st.hwmKiB = kv["VmRSS"], kv["VmHWM"]
	return st, nil
}

// meminfo holds the /proc/meminfo fields the idle scenario reports.
type meminfo struct {
	total, slab, sunreclaim int64 // KiB
}

func readMeminfo() meminfo {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return meminfo{}
	}
	kv := parseKiB(b)
	return meminfo{total: kv["MemTotal"], slab: kv["Slab"], sunreclaim: kv["SUnreclaim"]}
}

// parseKiB parses "Key:   123 kB" lines.
func parseKiB(b []byte) map[string]int64 {
	out := map[string]int64{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil {
			out[k] = n
		}
	}
	return out
}

type cpuTimes struct{ user, sys float64 }

// selfCPU is this process's CPU time so far.
func selfCPU() cpuTimes {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return cpuTimes{}
	}
	return cpuTimes{tvSeconds(ru.Utime), tvSeconds(ru.Stime)}
}

// Machine describes where the run happened.
type Machine struct {
	Hostname    string `json:"hostname"`
	Cores       int    `json:"cores"`
	CPUModel    string `json:"cpu_model,omitempty"`
	MemoryKiB   int64  `json:"memory_kib"`
	Kernel      string `json:"kernel"`
	OS          string `json:"os"`
	GoVersion   string `json:"go_version"`
	NofileLimit uint64 `json:"nofile_limit"`
	Date        string `json:"date"`
}

func machineInfo() Machine {
	m := Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(),
		OS: runtime.GOOS + "/" + runtime.GOARCH, Date: time.Now().UTC().Format(time.RFC3339)}
	m.Hostname, _ = os.Hostname()
	m.MemoryKiB = readMeminfo().total
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil {
		m.NofileLimit = rl.Max
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	return m
}

// mustURL parses a URL validate already accepted.
func mustURL(raw string) *url.URL {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err)
	}
	return u
}

func joinHostPort(host, port string) string { return net.JoinHostPort(host, port) }
