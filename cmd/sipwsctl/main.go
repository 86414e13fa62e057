// Command sipwsctl drives a sipws server through its JSON-RPC interface
// (sipws.NewRPCHandler), as kamcmd drives Kamailio's websocket module.
//
//	sipwsctl [-url URL] [-json] [-timeout D] METHOD [ARGS...]
//
// Without -url it talks to http://127.0.0.1:8081/RPC, where the examples
// (examples/echo, examples/webphone) serve the RPC when run with
// -admin 127.0.0.1:8081.
//
// Flags come before METHOD. Each ARG becomes one positional parameter: one
// that reads as a JSON number is sent as a number, anything else as a
// string; an "s:" prefix forces a string, as in kamcmd ("s:404").
//
//	sipwsctl ws.dump                       the first 50 connections
//	sipwsctl ws.dump used_desc 100 200     100 connections from the 201st, least recently used first
//	sipwsctl ws.dump id_hash -1 0 msrp     every msrp connection (at most 10,000 by default)
//	sipwsctl ws.close 12 4000 "Go away"    close connection 12 with 4000 "Go away"
//	sipwsctl ws.ping 12
//	sipwsctl ws.disable
//	sipwsctl stats.get_statistics all
//	sipwsctl system.listMethods
//
// ws.dump prints a table with a footer "N listed of TOTAL", marked
// "(truncated)" when more connections matched; stats.get_statistics prints
// "name = value" lines; a command that returns nothing prints "ok"; other
// results print as JSON. -json prints the result as JSON, whatever the
// method.
//
// A JSON-RPC error is printed on standard error as kamcmd does ("error: 500 -
// Unknown connection ID") and exits 1; so does a server that cannot be
// reached or does not answer within -timeout. A bad command line exits 2.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	neturl "net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// defaultURL is where sipwsctl looks for the RPC handler unless told: the
// examples' admin listener, -admin 127.0.0.1:8081.
const defaultURL = "http://127.0.0.1:8081/RPC"

// maxResponse bounds the response body read: far above the handler's
// default of 16 MiB (sipws.RPCOptions.MaxResponseBytes), for hosts that
// raise it.
const maxResponse = 1 << 30

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole program; it returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sipwsctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", defaultURL, "URL of the sipws JSON-RPC handler")
	raw := fs.Bool("json", false, "print the result as JSON")
	timeout := fs.Duration("timeout", 10*time.Second, "give up when the server has not answered within this time")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: sipwsctl [-url URL] [-json] [-timeout D] METHOD [ARGS...]\n\n"+
			"Runs one JSON-RPC command on a sipws server, as kamcmd does on Kamailio.\n"+
			"ARGS are positional parameters: numbers are sent as numbers, anything\n"+
			"else (or anything prefixed with s:) as strings.\n\n"+
			"Methods: ws.dump [order [limit [offset [subprotocol [remote_ip]]]]],\n"+
			"ws.close id [code [reason]], ws.ping id, ws.pong id, ws.disable, ws.enable,\n"+
			"stats.get_statistics [name...], system.listMethods\n\n"+
			"Flags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, "sipwsctl: missing METHOD")
		fs.Usage()
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintln(stderr, "sipwsctl: -timeout must be positive")
		return 2
	}
	method := fs.Arg(0)
	params := make([]any, 0, fs.NArg()-1)
	for _, a := range fs.Args()[1:] {
		params = append(params, param(a))
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	result, err := call(ctx, *url, method, params)
	var rerr *rpcError
	switch {
	case errors.As(err, &rerr):
		fmt.Fprintf(stderr, "error: %s\n", rerr)
		return 1
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Fprintf(stderr, "error: no answer from %s within %v\n", *url, *timeout)
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "error: %v\n", err)
		return 1
	}
	if *raw {
		printJSON(stdout, result)
		return 0
	}
	printResult(stdout, method, result)
	return 0
}

// jsonNumber matches the text of a JSON number.
var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// param turns a command-line argument into a parameter: a JSON number stays
// a number, "s:" forces a string.
func param(a string) any {
	if s, ok := strings.CutPrefix(a, "s:"); ok {
		return s
	}
	if jsonNumber.MatchString(a) {
		return json.Number(a)
	}
	return a
}

// rpcError is a JSON-RPC error object.
type rpcError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    string `json:"data,omitempty"`
}

// Error formats the error as kamcmd does, with the detail when there is one.
func (e *rpcError) Error() string {
	s := strconv.Itoa(e.Code) + " - " + e.Message
	if e.Data != "" {
		s += " (" + e.Data + ")"
	}
	return s
}

// call posts one request and returns its result, an *rpcError, or a
// transport error.
func call(ctx context.Context, url, method string, params []any) (json.RawMessage, error) {
	body, err := json.Marshal(map[string]any{"jsonrpc": "2.0", "method": method, "params": params, "id": 1})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("bad -url %q: %w", url, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("cannot reach %s: %w", url, unwrapURLError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("reading the answer of %s: %w", url, err)
	}
	var r struct {
		JSONRPC string          `json:"jsonrpc"`
		Result  json.RawMessage `json:"result"`
		Error   *rpcError       `json:"error"`
	}
	if json.Unmarshal(b, &r) != nil || r.JSONRPC != "2.0" || (r.Result == nil && r.Error == nil) {
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s answered HTTP %s", url, resp.Status)
		}
		return nil, fmt.Errorf("%s did not answer with a JSON-RPC response: %.200q", url, b)
	}
	if r.Error != nil {
		return nil, r.Error
	}
	return r.Result, nil
}

// unwrapURLError drops the "Post URL:" prefix that the message already has.
func unwrapURLError(err error) error {
	var ue *neturl.Error
	if errors.As(err, &ue) && ue.Err != nil {
		return ue.Err
	}
	return err
}

// printJSON prints v indented.
func printJSON(w io.Writer, v json.RawMessage) {
	var b bytes.Buffer
	if json.Indent(&b, v, "", "  ") != nil {
		b.Reset()
		b.Write(v)
	}
	b.WriteByte('\n')
	_, _ = w.Write(b.Bytes())
}

// printResult prints a result for a person.
func printResult(w io.Writer, method string, res json.RawMessage) {
	trimmed := bytes.TrimSpace(res)
	switch string(trimmed) {
	case "{}", "null", `""`:
		fmt.Fprintln(w, "ok")
		return
	}
	if method == "ws.dump" && printDump(w, trimmed) {
		return
	}
	var lines []string
	if json.Unmarshal(trimmed, &lines) == nil {
		for _, l := range lines {
			fmt.Fprintln(w, l)
		}
		return
	}
	var s string
	if json.Unmarshal(trimmed, &s) == nil {
		fmt.Fprintln(w, s)
		return
	}
	printJSON(w, trimmed)
}

// dumpConn is one connection of a ws.dump result.
type dumpConn struct {
	ID           uint64  `json:"id"`
	Src          string  `json:"src"`
	Dst          string  `json:"dst"`
	State        string  `json:"state"`
	AwaitingPong bool    `json:"awaiting_pong"`
	LastUsedS    int64   `json:"last_used_s"`
	Subprotocol  string  `json:"subprotocol"`
	Secure       bool    `json:"secure"`
	RTTms        float64 `json:"rtt_ms"`
}

// printDump prints a ws.dump result as a table. It returns false when res
// is not a ws.dump result. Kamailio's own format (a string per connection)
// is printed line by line.
func printDump(w io.Writer, res json.RawMessage) bool {
	var d struct {
		Connections []json.RawMessage `json:"connections"`
		Info        struct {
			WSCounter *int            `json:"wscounter"`
			Total     *int            `json:"total"`
			Truncated json.RawMessage `json:"truncated"`
		} `json:"info"`
	}
	if json.Unmarshal(res, &d) != nil || d.Info.WSCounter == nil {
		return false
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	header := false
	for _, raw := range d.Connections {
		var line string
		if json.Unmarshal(raw, &line) == nil { // Kamailio: "91: ws:... (state: OPEN, ...)"
			fmt.Fprintln(tw, line)
			continue
		}
		var c dumpConn
		if json.Unmarshal(raw, &c) != nil {
			fmt.Fprintln(tw, string(raw))
			continue
		}
		if !header {
			fmt.Fprintln(tw, "ID\tSRC\tDST\tSUBPROTO\tSTATE\tLAST USED\tAWAITING PONG\tRTT")
			header = true
		}
		pong := "no"
		if c.AwaitingPong {
			pong = "yes"
		}
		rtt := "-"
		if c.RTTms > 0 {
			rtt = time.Duration(c.RTTms * float64(time.Millisecond)).Round(time.Microsecond).String()
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%ds ago\t%s\t%s\n",
			c.ID, c.Src, c.Dst, c.Subprotocol, c.State, c.LastUsedS, pong, rtt)
	}
	_ = tw.Flush()

	footer := fmt.Sprintf("%d listed", *d.Info.WSCounter)
	if d.Info.Total != nil {
		footer += fmt.Sprintf(" of %d", *d.Info.Total)
	}
	switch strings.Trim(string(d.Info.Truncated), `"`) {
	case "true", "yes":
		footer += " (truncated)"
	}
	fmt.Fprintln(w, footer)
	return true
}
