package sipws_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/sipws/sipws"
)

// FuzzRPCRequest posts arbitrary bodies to the RPC handler: it must never
// panic, and must answer either 204 with an empty body or a complete JSON
// body made of JSON-RPC 2.0 response objects.
func FuzzRPCRequest(f *testing.F) {
	for _, seed := range []string{
		`{"jsonrpc":"2.0","method":"ws.dump","id":1}`,
		`{"jsonrpc":"2.0","method":"ws.dump","params":["used_desc",2,0,"sip","127.0.0.1"],"id":"a"}`,
		`{"jsonrpc":"2.0","method":"ws.dump","params":{"order":"used_asc","limit":-1,"offset":3},"id":null}`,
		`{"jsonrpc":"2.0","method":"ws.close","params":[1,4000,"bye"],"id":2}`,
		`{"jsonrpc":"2.0","method":"ws.ping","params":["7"],"id":3}`,
		`{"jsonrpc":"2.0","method":"stats.get_statistics","params":["all"],"id":4}`,
		`{"jsonrpc":"2.0","method":"system.listMethods","id":1e999}`,
		`{"jsonrpc":"2.0","method":"ws.enable"}`,
		`[{"jsonrpc":"2.0","method":"ws.pong","params":{"id":1},"id":5},{"jsonrpc":"2.0","method":"ws.enable"},7]`,
		`[]`,
		`[[[[]]]]`,
		`[{"jsonrpc":"2.0","method":"system.listMethods","id":1},{"jsonrpc":"2.0","method":"stats.get_statistics","id":2},{"jsonrpc":"2.0","method":"ws.enable"}]`,
		`[1,2,3,4]`,
		`{"jsonrpc":"2.0","method":"ws.dump","params":[{"a":[1,2]}],"id":{"x":1}}`,
		`{"jsonrpc":"2.0","method":`,
		"\xef\xbb\xbf{}",
		``,
	} {
		f.Add([]byte(seed))
	}

	srv, err := sipws.New(sipws.Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	// The defaults, and limits small enough for fuzzed bodies to reach.
	handlers := []http.Handler{
		sipws.NewRPCHandler(srv, nil),
		sipws.NewRPCHandler(srv, &sipws.RPCOptions{MaxBatch: 3, MaxDumpRows: 2, MaxResponseBytes: 300}),
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		for _, h := range handlers {
			fuzzRPCOnce(t, h, body)
		}
	})
}

// fuzzRPCOnce posts body to h and checks the answer.
func fuzzRPCOnce(t *testing.T, h http.Handler, body []byte) {
	req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1/RPC", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(rec, req)
	}()
	select {
	case <-done:
	case <-time.After(ioTimeout):
		t.Fatalf("no answer within %v to %q", ioTimeout, body)
	}

	out := rec.Body.Bytes()
	if rec.Code == http.StatusNoContent {
		if len(out) != 0 {
			t.Fatalf("204 with a body %q for %q", out, body)
		}
		return
	}
	if !json.Valid(out) {
		t.Fatalf("status %d, body not JSON: %q for %q", rec.Code, out, body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	var objs []map[string]json.RawMessage
	if bytes.HasPrefix(bytes.TrimSpace(out), []byte("[")) {
		if err := json.Unmarshal(out, &objs); err != nil || len(objs) == 0 {
			t.Fatalf("bad batch response %q (%v) for %q", out, err, body)
		}
	} else {
		var one map[string]json.RawMessage
		if err := json.Unmarshal(out, &one); err != nil {
			t.Fatalf("bad response %q (%v) for %q", out, err, body)
		}
		objs = append(objs, one)
	}
	for _, o := range objs {
		if string(o["jsonrpc"]) != `"2.0"` {
			t.Fatalf("response without jsonrpc 2.0: %q for %q", out, body)
		}
		if _, ok := o["id"]; !ok {
			t.Fatalf("response without id: %q for %q", out, body)
		}
		_, hasResult := o["result"]
		_, hasError := o["error"]
		if hasResult == hasError {
			t.Fatalf("response needs exactly one of result and error: %q for %q", out, body)
		}
	}
}
