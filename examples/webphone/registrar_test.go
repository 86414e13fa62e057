package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sipws/sipws"
)

// BenchmarkContactLookup measures the lookup of a request for a browser's
// Contact among 20 000 bindings (the flood: 10 ms a lookup when it
// scanned every binding under the lock).
func BenchmarkContactLookup(b *testing.B) {
	s := newMemStore()
	now := time.Now()
	const n = 20000
	for i := range n {
		var ch sip.ContactHeader
		if err := sip.ParseUri(fmt.Sprintf("sip:c%d@h%d.invalid;transport=ws", i, i), &ch.Address); err != nil {
			b.Fatal(err)
		}
		err := s.put(binding{user: fmt.Sprintf("u%d", i), key: fmt.Sprintf("k%d", i), contact: ch,
			conn: sipws.ConnID(i/maxBindingsPerConn + 1), expires: now.Add(time.Hour), updated: now})
		if err != nil {
			b.Fatal(err)
		}
	}
	var target sip.Uri
	_ = sip.ParseUri("sip:c19999@h19999.invalid", &target)
	b.ResetTimer()
	for b.Loop() {
		if len(s.byContact(&target, now)) != 1 {
			b.Fatal("not found")
		}
	}
}
