package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// userHZ is the unit of utime and stime in /proc/PID/stat (USER_HZ, 100 on
// Linux whatever the kernel's HZ).
const userHZ = 100

// procUsage is the CPU time and I/O syscalls of a process tree.
type procUsage struct {
	cpu      time.Duration // utime + stime of every process, all threads
	reads    uint64        // read-like syscalls (syscr of /proc/PID/io)
	writes   uint64        // write-like syscalls (syscw)
	procs    int
	measured bool
}

// processTree returns root and all its descendants.
func processTree(root int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := statFields(pid)
		if err != nil || len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(string(f[1]))
		children[ppid] = append(children[ppid], pid)
	}
	if _, err := os.Stat("/proc/" + itoa(root)); err != nil {
		return nil, fmt.Errorf("server process %d: %w", root, err)
	}
	tree := []int{root}
	for i := 0; i < len(tree) && i < 10000; i++ {
		tree = append(tree, children[tree[i]]...)
	}
	return tree, nil
}

// statFields returns the fields of /proc/PID/stat after the command name:
// [0] is the state, [1] the ppid, [11] utime, [12] stime.
func statFields(pid int) ([][]byte, error) {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	return bytes.Fields(b[i+1:]), nil
}

// usage sums the CPU time and syscalls of the process tree rooted at root.
func usage(root int) (procUsage, error) {
	pids, err := processTree(root)
	if err != nil {
		return procUsage{}, err
	}
	u := procUsage{procs: len(pids), measured: true}
	for _, pid := range pids {
		f, err := statFields(pid)
		if err != nil || len(f) < 13 {
			continue // ended meanwhile
		}
		ut, _ := strconv.ParseUint(string(f[11]), 10, 64)
		st, _ := strconv.ParseUint(string(f[12]), 10, 64)
		u.cpu += time.Duration(ut+st) * time.Second / userHZ
		if io, err := os.ReadFile("/proc/" + itoa(pid) + "/io"); err == nil {
			for line := range bytes.SplitSeq(io, []byte("\n")) {
				name, v, ok := bytes.Cut(line, []byte(": "))
				if !ok {
					continue
				}
				n, _ := strconv.ParseUint(string(v), 10, 64)
				switch string(name) {
				case "syscr":
					u.reads += n
				case "syscw":
					u.writes += n
				}
			}
		}
	}
	return u, nil
}

// selfCPU returns this process's CPU time.
func selfCPU() time.Duration {
	f, err := statFields(os.Getpid())
	if err != nil || len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(string(f[11]), 10, 64)
	st, _ := strconv.ParseUint(string(f[12]), 10, 64)
	return time.Duration(ut+st) * time.Second / userHZ
}
