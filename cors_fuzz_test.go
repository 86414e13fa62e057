package sipws

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzOriginAllowed feeds originAllowed any Origin and Host: it never
// panics, "*" allows everything, an Origin equal to the server's own
// origin is always allowed, and an Origin no pattern can match (the
// patterns name hosts of .example only) is refused unless it is the
// server's own.
func FuzzOriginAllowed(f *testing.F) {
	for _, s := range []string{"https://a.example", "null", "", "http://127.0.0.1:8080", "https://x.app.example:443", "http://[::1]:80", "https://a.example/", "%zz", "https://user@a.example"} {
		f.Add(s, "127.0.0.1:8080")
	}
	patterns := []string{"*.app.example", "https://b.example", "null"}
	f.Fuzz(func(t *testing.T, origin, host string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = host
		r.Header.Set("Origin", origin)
		if !originAllowed([]string{"*"}, r) {
			t.Fatalf("* refused %q", origin)
		}
		ok := originAllowed(patterns, r)
		if host != "" && (origin == "http://"+host || origin == "https://"+host) && !ok {
			t.Fatalf("own origin %q refused for Host %q", origin, host)
		}
		if ok && origin != "null" && !strings.Contains(strings.ToLower(origin), ".example") && !strings.Contains(strings.ToLower(origin), strings.ToLower(host)) {
			t.Fatalf("%q allowed for Host %q by %q", origin, host, patterns)
		}
	})
}
