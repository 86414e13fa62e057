package webpage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBundleJsSIP(t *testing.T) {
	root := filepath.Join("..", "..", "webphone", "web")
	if _, err := os.Stat(filepath.Join(root, "node_modules", "jssip", "package.json")); err != nil {
		t.Skip("run npm ci --prefix examples/webphone/web first")
	}
	b, err := Bundle(root, JsSIPEntry, "JsSIP")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"node_modules/jssip/lib/UA.js", "node_modules/debug/src/browser.js", "node_modules/events/events.js", "node_modules/sdp-transform/lib/index.js", "node_modules/jssip/package.json"} {
		if !strings.Contains(string(b), "*/ ") || !strings.Contains(string(b), want) {
			t.Errorf("bundle lacks %s", want)
		}
	}
	if strings.Contains(string(b), "debug/src/node.js") {
		t.Error("bundle has the Node build of debug")
	}
	t.Logf("bundle: %d bytes", len(b))
}
