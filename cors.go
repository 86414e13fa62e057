package sipws

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
)

// CORSMode says which Access-Control-Allow-Origin header the 101 response
// carries, as Kamailio's cors_mode modparam.
type CORSMode uint8

const (
	// CORSNone adds no Access-Control-Allow-Origin header (cors_mode 0, the
	// default).
	CORSNone CORSMode = iota
	// CORSAny adds "Access-Control-Allow-Origin: *" (cors_mode 1). Unlike
	// Kamailio it is added only in reply to a request that has an Origin.
	CORSAny
	// CORSEcho echoes the request's Origin (cors_mode 2); a request without
	// Origin gets no header.
	CORSEcho
)

// String returns "none", "any" or "echo".
func (m CORSMode) String() string {
	switch m {
	case CORSNone:
		return "none"
	case CORSAny:
		return "any"
	case CORSEcho:
		return "echo"
	}
	return fmt.Sprintf("CORSMode(%d)", uint8(m))
}

// parseCORSMode parses "none", "any" (or "*") and "echo", or Kamailio's
// numbers "0", "1" and "2".
func parseCORSMode(s string) (CORSMode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "none", "0":
		return CORSNone, nil
	case "any", "*", "1":
		return CORSAny, nil
	case "echo", "2":
		return CORSEcho, nil
	}
	return 0, fmt.Errorf("sipws: unknown CORS mode %s (want none, any or echo)", quote(s))
}

// allowOrigin returns the value of Access-Control-Allow-Origin for a request
// whose Origin header is origin, or "" for none.
func (m CORSMode) allowOrigin(origin string) string {
	if origin == "" {
		return ""
	}
	switch m {
	case CORSAny:
		return "*"
	case CORSEcho:
		return origin
	}
	return ""
}

// MarshalText implements encoding.TextMarshaler: "none", "any" or "echo".
func (m CORSMode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler: "none", "any" (or "*"),
// "echo", or Kamailio's cors_mode numbers "0", "1", "2".
func (m *CORSMode) UnmarshalText(b []byte) error {
	v, err := parseCORSMode(string(b))
	if err == nil {
		*m = v
	}
	return err
}

// checkOriginPatterns validates Config.AllowedOrigins.
func checkOriginPatterns(patterns []string) error {
	for _, p := range patterns {
		if p == "" {
			return errors.New("empty pattern")
		}
		if _, err := path.Match(strings.ToLower(p), ""); err != nil {
			return fmt.Errorf("pattern %s: %w", quote(p), err)
		}
	}
	return nil
}

// originAllowed reports whether the Origin of handshake r is acceptable
// under Config.AllowedOrigins: none (not a browser), the server's own (its
// host:port is the request's Host), or one a pattern matches.
func originAllowed(patterns []string, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" && len(r.Header.Values("Origin")) == 0 {
		return true
	}
	for _, p := range patterns {
		if p == "*" || (p == "null" && origin == "null") {
			return true
		}
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || u.Scheme == "" || u.Path != "" || u.User != nil {
		return false
	}
	host := strings.ToLower(u.Host)
	if host == strings.ToLower(r.Host) {
		return true
	}
	full := strings.ToLower(u.Scheme) + "://" + host
	for _, p := range patterns {
		p = strings.ToLower(p)
		target := host
		if strings.Contains(p, "://") {
			target = full
		}
		if ok, _ := path.Match(p, target); ok {
			return true
		}
	}
	return false
}
