package sipwsprom_test

import (
	"go/parser"
	"go/token"
	"strconv"
	"strings"
	"testing"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDocListsEveryCause: the package documentation lists every value the
// cause label of sipws_closes_total can take, that is the name of every
// sipws.CloseCause, and no other.
func TestDocListsEveryCause(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "sipwsprom.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	require.NoError(t, err)
	require.NotNil(t, f.Doc)
	doc := f.Doc.Text()
	_, list, ok := strings.Cut(doc, "cause is sipws.CloseCause's name (")
	require.True(t, ok, "the package doc should list the cause names after \"cause is sipws.CloseCause's name (\"")
	list, _, ok = strings.Cut(list, ")")
	require.True(t, ok)
	var documented []string
	for _, q := range strings.Split(list, ",") {
		name, err := strconv.Unquote(strings.TrimSpace(q))
		require.NoError(t, err, "%q in the list", q)
		documented = append(documented, name)
	}

	var names []string
	for i := 1; i < 256; i++ {
		if s := sipws.CloseCause(i).String(); !strings.HasPrefix(s, "CloseCause(") {
			names = append(names, s)
		}
	}
	require.NotEmpty(t, names)
	assert.ElementsMatch(t, names, documented)
}
