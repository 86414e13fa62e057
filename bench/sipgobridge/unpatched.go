//go:build !sipgopatched

package main

import (
	"fmt"

	"github.com/sipws/sipws"
)

// patchedHandler exists only in a build against a patched sipgo.
func patchedHandler(mode string) (func(*sipws.Conn, sipws.Message), error) {
	return nil, fmt.Errorf("mode %q: want sipws, sipgo, bridge (patched needs -tags sipgopatched, see run.sh)", mode)
}
