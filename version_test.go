package sipws

import (
	"os"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestVersionMatchesChangelog: Version is the newest version that
// CHANGELOG.md lists (an "Unreleased" heading without a number above it
// does not count).
func TestVersionMatchesChangelog(t *testing.T) {
	data, err := os.ReadFile("CHANGELOG.md")
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^## \[(\d+\.\d+\.\d+)\]`).FindSubmatch(data)
	require.NotNil(t, m, "CHANGELOG.md should have a \"## [X.Y.Z]\" heading")
	require.Equal(t, string(m[1]), Version, "Version and the newest version of CHANGELOG.md")
}
