// Command summarize turns the raw results of bench/run.sh (results.jsonl and
// machine.json in a results directory) into summary.md: for each measure the
// median over rounds of sipws, the bare engine and Kamailio, the median of
// the per-round ratios sipws/Kamailio and sipws/bare, the targets of issue 8
// and PASS or MISS. It prints the table on stdout too.
//
//	go run ./bench/summarize -dir bench/results/20261125T200000Z
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

func main() {
	dir := flag.String("dir", "", "results `directory` of bench/run.sh")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *dir == "" {
		log.Error("-dir is required")
		os.Exit(2)
	}
	md, table, err := summarize(*dir)
	if err != nil {
		log.Error("summarize", "err", err)
		os.Exit(1)
	}
	if err := os.WriteFile(filepath.Join(*dir, "summary.md"), []byte(md), 0o644); err != nil {
		log.Error("summarize", "err", err)
		os.Exit(1)
	}
	fmt.Print(table)
}

type record map[string]any

func (r record) str(k string) string {
	s, _ := r[k].(string)
	return s
}

func (r record) num(k string) (float64, bool) {
	v, ok := r[k].(float64)
	return v, ok
}

// target is a bound on a ratio or on a value.
type target struct {
	op    string // ">=", "<=" or "<"
	bound float64
}

func (t *target) String() string {
	if t == nil {
		return "—"
	}
	op := map[string]string{">=": "≥", "<=": "≤", "<": "<"}[t.op]
	return op + " " + trimFloat(t.bound)
}

func (t *target) ok(v float64) bool {
	switch t.op {
	case ">=":
		return v >= t.bound
	case "<=":
		return v <= t.bound
	default:
		return v < t.bound
	}
}

// measure is one row of the table.
type measure struct {
	name     string
	test     string
	field    string
	digits   int
	kam      *target // on the median of sipws/kamailio ratios
	bare     *target // on the median of sipws/bare ratios
	abs      *target // on sipws's median value
	absLabel string
}

var measures = []measure{
	{name: "requests/s, 1 connection", test: "rps_1", field: "rps"},
	{name: "requests/s, 100 connections", test: "rps_100", field: "rps", kam: &target{">=", 3.0}, bare: &target{">=", 0.90}},
	{name: "requests/s, 1,000 connections", test: "rps_1000", field: "rps", kam: &target{">=", 2.0}, bare: &target{">=", 0.90}},
	{name: "latency p50, 1 connection (µs)", test: "rps_1", field: "p50_us", digits: 1},
	{name: "latency p99, 1 connection (µs)", test: "rps_1", field: "p99_us", digits: 1},
	{name: "latency p50, 100 connections (µs)", test: "rps_100", field: "p50_us", digits: 1},
	{name: "latency p99, 100 connections (µs)", test: "rps_100", field: "p99_us", digits: 1},
	{name: "latency p99.9, 100 connections (µs)", test: "rps_100", field: "p999_us", digits: 1},
	{name: "latency p50, 1,000 connections (µs)", test: "rps_1000", field: "p50_us", digits: 1},
	{name: "latency p99, 1,000 connections (µs)", test: "rps_1000", field: "p99_us", digits: 1, kam: &target{"<=", 1.0}},
	{name: "latency p99.9, 1,000 connections (µs)", test: "rps_1000", field: "p999_us", digits: 1},
	{name: "handshakes/s, 50 loops", test: "handshake", field: "hps", kam: &target{">=", 2.0}, bare: &target{">=", 0.85}},
	{name: "memory per idle connection, {n1} (KiB)", test: "mem_{n1}", field: "per_conn_kib", digits: 2},
	{name: "memory per idle connection, {n2} (KiB)", test: "mem_{n2}", field: "per_conn_kib", digits: 2,
		kam: &target{"<=", 0.12}, bare: &target{"<=", 1.10}, abs: &target{"<=", 8}, absLabel: "KiB"},
	{name: "idle CPU, {n2} connections, keepalive on (% of a core)", test: "idle_cpu", field: "cpu_pct", digits: 3,
		abs: &target{"<", 1}, absLabel: "%"},
	{name: "server CPU per request, 100 connections (µs)", test: "rps_100", field: "server_cpu_us_per_req", digits: 2,
		kam: &target{"<=", 0.33}, bare: &target{"<=", 1.10}},
	{name: "server CPU per request, 1 connection (µs)", test: "rps_1", field: "server_cpu_us_per_req", digits: 2},
	{name: "server CPU per request, 1,000 connections (µs)", test: "rps_1000", field: "server_cpu_us_per_req", digits: 2},
	{name: "server CPU per handshake (µs)", test: "handshake", field: "server_cpu_us_per_hs", digits: 1},
	{name: "server read() calls per request, 100 connections", test: "rps_100", field: "server_reads_per_req", digits: 2},
	{name: "server write() calls per request, 100 connections", test: "rps_100", field: "server_writes_per_req", digits: 2},
	{name: "load generator CPU, rps 100 connections (% of a core)", test: "rps_100", field: "loadgen_cpu_pct", digits: 1},
	{name: "allocations per received message (Go benchmark)", test: "go_receive", field: "allocs_per_msg", digits: 2,
		abs: &target{"<=", 1}, absLabel: "allocs"},
}

var servers = []string{"sipws", "bare", "kamailio"}

func load(dir string) ([]record, record, error) {
	f, err := os.Open(filepath.Join(dir, "results.jsonl"))
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	var recs []record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, nil, fmt.Errorf("results.jsonl line %d: %w", n, err)
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, err
	}
	machine := record{}
	if b, err := os.ReadFile(filepath.Join(dir, "machine.json")); err == nil {
		if err := json.Unmarshal(b, &machine); err != nil {
			return nil, nil, fmt.Errorf("machine.json: %w", err)
		}
	}
	return recs, machine, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// valuesByRound returns server -> round -> value for a test and field.
// A run with errors counts: its numbers are kept, and flagged.
func valuesByRound(recs []record, test, field string) map[string]map[int]float64 {
	out := map[string]map[int]float64{}
	for _, r := range recs {
		if r.str("test") != test {
			continue
		}
		v, ok := r.num(field)
		if !ok {
			continue
		}
		round, _ := r.num("round")
		s := r.str("server")
		if out[s] == nil {
			out[s] = map[int]float64{}
		}
		out[s][int(round)] = v
	}
	return out
}

// ratios returns the per-round ratios a/b for rounds that have both.
func ratios(a, b map[int]float64) []float64 {
	var out []float64
	for round, va := range a {
		if vb, ok := b[round]; ok && vb != 0 {
			out = append(out, va/vb)
		}
	}
	return out
}

func fmtNum(v float64, digits int) string {
	if math.IsNaN(v) {
		return "—"
	}
	if digits == 0 && math.Abs(v) >= 1000 {
		return commas(int64(math.Round(v)))
	}
	return fmt.Sprintf("%.*f", digits, v)
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func trimFloat(v float64) string {
	return strings.TrimSuffix(strings.TrimSuffix(fmt.Sprintf("%.2f", v), "0"), ".0")
}

func summarize(dir string) (md, table string, err error) {
	recs, machine, err := load(dir)
	if err != nil {
		return "", "", err
	}
	var tb strings.Builder
	tb.WriteString("| measure | sipws | bare | kamailio | sipws/kamailio | sipws/bare | target | result |\n")
	tb.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |\n")
	n1, n2 := 10000, 15000
	if v, ok := machine.num("idle_n1"); ok {
		n1 = int(v)
	}
	if v, ok := machine.num("idle_n2"); ok {
		n2 = int(v)
	}
	expand := strings.NewReplacer("{n1}", fmt.Sprint(n1), "{n2}", fmt.Sprint(n2))
	label := strings.NewReplacer("{n1}", commas(int64(n1)), "{n2}", commas(int64(n2)))
	for _, m := range measures {
		m.test, m.name = expand.Replace(m.test), label.Replace(m.name)
		byServer := valuesByRound(recs, m.test, m.field)
		if len(byServer) == 0 {
			continue
		}
		cells := []string{m.name}
		med := map[string]float64{}
		for _, s := range servers {
			var vs []float64
			for _, v := range byServer[s] {
				vs = append(vs, v)
			}
			med[s] = median(vs)
			cells = append(cells, fmtNum(med[s], m.digits))
		}
		rk := median(ratios(byServer["sipws"], byServer["kamailio"]))
		rb := median(ratios(byServer["sipws"], byServer["bare"]))
		cells = append(cells, fmtRatio(rk), fmtRatio(rb))
		var targets, verdicts []string
		check := func(t *target, v float64, what, unit string) {
			if t == nil {
				return
			}
			targets = append(targets, what+" "+t.String()+unit)
			switch {
			case math.IsNaN(v):
				verdicts = append(verdicts, "n/a ("+what+")")
			case t.ok(v):
				verdicts = append(verdicts, "PASS")
			default:
				verdicts = append(verdicts, fmt.Sprintf("MISS (%s: %.3f%s)", what, v, unit))
			}
		}
		check(m.kam, rk, "vs K", "×")
		check(m.bare, rb, "vs B", "×")
		if m.abs != nil {
			check(m.abs, med["sipws"], "sipws", " "+m.absLabel)
		}
		cells = append(cells, strings.TrimSpace(strings.Join(targets, ", ")), verdict(verdicts))
		tb.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}

	var b strings.Builder
	b.WriteString("# sipws benchmark results\n\n")
	fmt.Fprintf(&b, "Run of `bench/run.sh` on %s.\n\n", machine.str("date"))
	b.WriteString("## Machine\n\n")
	fmt.Fprintf(&b, "- %v cores (%s), %v GiB, Linux %s\n", num(machine, "cores"), machine.str("cpu"), num(machine, "mem_gib"), machine.str("kernel"))
	fmt.Fprintf(&b, "- %s, Kamailio %s (Debian), sipws at %s", machine.str("go"), machine.str("kamailio"), machine.str("commit"))
	if mod := machine.str("modified"); mod != "" {
		fmt.Fprintf(&b, " with uncommitted changes to %s", mod)
	}
	b.WriteString("\n")
	fmt.Fprintf(&b, "- server pinned to CPU 0, load generator to CPU 1: %v\n", machine["pinned"])
	fmt.Fprintf(&b, "- other work on the machine: load average %s at start, %s at end; CPU pressure (some, avg60 avg300) %s at start, %s at end\n",
		machine.str("loadavg_start"), machine.str("loadavg_end"), machine.str("cpu_pressure_start"), machine.str("cpu_pressure_end"))
	fmt.Fprintf(&b, "- %v rounds, interleaved (sipws, bare, kamailio in each); rps and handshake runs %s after a %s warm-up; idle CPU over %v s; %v s settling after idle connections open\n\n",
		num(machine, "rounds"), machine.str("duration"), machine.str("warmup"), num(machine, "cpu_window_s"), num(machine, "settle_s"))
	b.WriteString("## Results\n\n")
	b.WriteString("Values are medians over rounds; ratios are medians of the per-round ratios (sipws ÷ the other). ")
	b.WriteString("Targets are issue 8's: \"vs K\" on sipws/kamailio, \"vs B\" on sipws/bare, a bare bound on sipws's own value.\n\n")
	b.WriteString(tb.String())
	b.WriteString("\n## Notes\n\n")
	b.WriteString(notes)
	if errs := errorRuns(recs); len(errs) > 0 {
		b.WriteString("\n## Runs with errors\n\n")
		for _, e := range errs {
			b.WriteString("- " + e + "\n")
		}
	}
	return b.String(), tb.String(), nil
}

const notes = `- The servers: sipws is ` + "`bench/optionsd`" + ` (sipws.Server on net/http, OnMessage builds the 200 OK and calls Conn.Send);
  bare is ` + "`bench/bareopts`" + ` (ws.UpgradeHTTP, one goroutine per connection, 512-byte bufio under ws.ReadHeaderBuffer,
  synchronous write); both build the reply with ` + "`bench/internal/sipopts`" + `. Kamailio runs ` + "`bench/kamailio/kamailio.cfg`" + `
  (xhttp + websocket + sl, children = tcp_children = 2, -m 2048 -M 32), all its processes on CPU 0.
- rps, handshake and memory runs have keepalives off in all three servers; the idle-CPU run has them on (Ping after
  180 s idle) in sipws and Kamailio, and bare has none. With a 180 s timeout no Ping falls due inside the idle window
  (the connections are younger than that), so the idle CPU is the cost of the keepalive scan and of the runtime;
  ` + "`bench/keepalive.sh`" + ` measures the cost per Ping.
- Server CPU is utime+stime from /proc/PID/stat of every process of the server over the measured window (10 ms ticks);
  per request it is that divided by the requests answered in the window. read()/write() calls come from /proc/PID/io
  (syscr/syscw), which counts read/write/readv/writev but not recv/send: Kamailio's writes do not show there.
- Memory is PSS summed over every process of the server (Kamailio's shared memory is split among its processes by PSS),
  less the PSS of the fresh server before any connection, divided by the connections; the 15,000 figure is with the
  10,000 still open plus 5,000 from a second client process.
- The load generator (` + "`bench/loadgen`" + `) has one core; when its CPU is near 100 % the request rate is its limit, not
  the server's, and server CPU per request is the figure to compare.
`

func verdict(v []string) string {
	if len(v) == 0 {
		return ""
	}
	miss := []string{}
	for _, s := range v {
		if s != "PASS" {
			miss = append(miss, s)
		}
	}
	if len(miss) == 0 {
		return "PASS"
	}
	return strings.Join(miss, ", ")
}

func fmtRatio(v float64) string {
	if math.IsNaN(v) {
		return "—"
	}
	return fmt.Sprintf("%.2f×", v)
}

func num(r record, k string) any {
	if v, ok := r[k]; ok {
		return v
	}
	return "?"
}

func errorRuns(recs []record) []string {
	var out []string
	for _, r := range recs {
		if n, ok := r.num("errors"); ok && n > 0 {
			first := ""
			if fe, ok := r["first_errors"].([]any); ok && len(fe) > 0 {
				first = fmt.Sprint(fe[0])
			}
			out = append(out, fmt.Sprintf("%s %s round %v: %v errors (first: %s)", r.str("test"), r.str("server"), r["round"], n, first))
		}
	}
	return out
}
