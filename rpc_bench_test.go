package sipws

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// rpcBatchBody is a batch of n ws.dump calls with the given params.
func rpcBatchBody(n int, params func(i int) string) string {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"jsonrpc":"2.0","method":"ws.dump","params":%s,"id":%d}`, params(i), i)
	}
	b.WriteByte(']')
	return b.String()
}

// benchRPC posts body to h once per iteration and reports the response
// size.
func benchRPC(b *testing.B, h http.Handler, body string) {
	b.Helper()
	b.ReportAllocs()
	var size int
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1:8081/RPC", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %.300s", rec.Code, rec.Body.Bytes())
		}
		size = rec.Body.Len()
	}
	b.ReportMetric(float64(size), "resp-bytes/op")
	b.ReportMetric(float64(len(body)), "req-bytes/op")
}

// BenchmarkRPCDumpBatchAttack is issue 12's attack, scaled down: one
// request holding a batch of 2,000 "list them all" ws.dump calls over 200
// connections (the 1 MiB batch holds about 17,000).
func BenchmarkRPCDumpBatchAttack(b *testing.B) {
	s, _ := benchRegistry(b, 200)
	h := NewRPCHandler(s, nil)
	benchRPC(b, h, rpcBatchBody(2000, func(int) string { return `["id_hash",-1]` }))
}

// BenchmarkRPCDumpBatchMax is the most of issue 12's attack that the
// limits let through: a batch of 100 (the cap) "list them all" ws.dump calls
// over 200 connections.
func BenchmarkRPCDumpBatchMax(b *testing.B) {
	s, _ := benchRegistry(b, 200)
	h := NewRPCHandler(s, nil)
	benchRPC(b, h, rpcBatchBody(100, func(int) string { return `["id_hash",-1]` }))
}

// BenchmarkRPCDumpPages100k is a batch of 100 ws.dump pages of 10 rows
// each over 100,000 connections: the cost of taking the registry's
// snapshot, not of the rows.
func BenchmarkRPCDumpPages100k(b *testing.B) {
	s, _ := benchRegistry(b, 100000)
	h := NewRPCHandler(s, nil)
	benchRPC(b, h, rpcBatchBody(100, func(i int) string { return fmt.Sprintf(`["used_desc",10,%d]`, i*10) }))
}

// BenchmarkRPCDumpAll100k is the largest batch allowed, 100 calls, each
// asking ws.dump for every one of 100,000 connections: the rows cap and the
// response budget bound it (without them: about 2 GB of JSON).
func BenchmarkRPCDumpAll100k(b *testing.B) {
	s, _ := benchRegistry(b, 100000)
	h := NewRPCHandler(s, nil)
	benchRPC(b, h, rpcBatchBody(100, func(int) string { return `["id_hash",-1]` }))
}
