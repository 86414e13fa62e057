package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
)

// TestCompressionFlag checks -compression: the web phone then answers a
// permessage-deflate offer (as every browser sends one), and without it
// answers none.
func TestCompressionFlag(t *testing.T) {
	o, err := parseFlags([]string{"-compression"}, io.Discard)
	if err != nil || !o.compress {
		t.Fatalf("-compression: %v %v", err, o.compress)
	}
	for _, on := range []bool{true, false} {
		ts := newTestServerWith(t, appConfig{deflate: on})
		d := ws.Dialer{Protocols: []string{"sip"}, Timeout: 5 * time.Second,
			Extensions: []httphead.Option{wsflate.DefaultParameters.Option()}}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, _, hs, err := d.Dial(ctx, ts.url)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.Close()
		if got := len(hs.Extensions) == 1 && string(hs.Extensions[0].Name) == "permessage-deflate"; got != on {
			t.Errorf("compression %v: extensions answered %v", on, hs.Extensions)
		}
	}
}
