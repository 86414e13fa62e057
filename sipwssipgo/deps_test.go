package sipwssipgo_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// The core package links no SIP stack: sipgo comes in only through this
// package (go list -deps of the core names no emiago module). diago is a
// test-only dependency of this package (diago_test.go): the package itself
// links neither it nor its media stack (pion).
func TestCoreDoesNotImportSipgo(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	require.NoError(t, err, "the go command runs the tests")
	out, err := exec.Command(goCmd, "list", "-deps", "github.com/sipws/sipws").Output()
	require.NoError(t, err)
	deps := strings.Fields(string(out))
	require.Contains(t, deps, "github.com/gobwas/ws", "the listing names the core's dependencies")
	for _, d := range deps {
		require.NotContains(t, d, "emiago", "the core package depends on %s", d)
	}
	out, err = exec.Command(goCmd, "list", "-deps", "github.com/sipws/sipws/sipwssipgo").Output()
	require.NoError(t, err)
	deps = strings.Fields(string(out))
	require.Contains(t, deps, "github.com/emiago/sipgo/sip")
	for _, d := range deps {
		require.NotContains(t, d, "emiago/diago", "sipwssipgo depends on %s", d)
		require.NotContains(t, d, "github.com/pion/", "sipwssipgo depends on %s", d)
	}
}
