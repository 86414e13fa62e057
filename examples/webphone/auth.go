package main

import (
	"bufio"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// Digest authentication (RFC 3261 §22, RFC 8760) of the users of a users
// file.
//
// Users file: one user a line, blank lines and lines starting with # are
// skipped. Either
//
//	user:password                 the password in clear: MD5 and SHA-256
//	user:realm:md5-ha1            htdigest: MD5 only (HA1 = MD5(user:realm:password))
//	user:realm:md5-ha1:sha256-ha1 htdigest with a SHA-256 HA1 column: both
//
// A line is read as htdigest when its third field is 32 hex digits (and
// its fourth, if any, 64) and it has no other; anything else is
// user:password (the password may contain colons: only a password of the
// form "x:<32 hex digits>" cannot be written in clear). The realm of an
// htdigest line must be the SIP domain (-domain), else its hashes could
// never match: the file is refused. SHA-256 needs the clear password or the
// fourth column, SHA-256(user:realm:password) in hex; a user with the MD5
// hash only can answer MD5 challenges only.
//
// Challenges: one per algorithm, each with qop="auth", in the order of
// -digest-algorithms, most preferred first as RFC 8760 §2.4 asks: SHA-256,
// then MD5 by default. JsSIP (3.10) and SIP.js (0.21) keep only the last
// WWW-Authenticate or Proxy-Authenticate header of a response and answer
// only MD5, so MD5 must come last for them: the default order suits both. Nonces are stateless: the time they were made, random bytes and an
// HMAC under a key made at start, so they are worth nothing after a
// restart; they expire after nonceLifetime and a response with an expired
// one gets a new challenge with stale=true. The highest nonce-count seen is
// kept per nonce (for at most maxNonces nonces at once, until the nonce
// expires): a response whose nc is not higher is a replay, refused.

const (
	nonceLifetime = 5 * time.Minute
	maxNonces     = 100_000
)

// Digest algorithms, by their RFC 8760 names.
const (
	algMD5    = "MD5"
	algSHA256 = "SHA-256"
)

// credential is what the users file holds for a user: HA1 per algorithm.
type credential struct {
	ha1 map[string]string // algorithm -> hex HA1
}

// digestAuth checks the Authorization and Proxy-Authorization headers.
type digestAuth struct {
	realm string
	users map[string]credential // user (lower-case) -> credential
	algs  []string              // offered, in order
	key   []byte
	now   func() time.Time

	mu     sync.Mutex
	counts map[string]nonceCount // nonce -> highest nc seen
}

type nonceCount struct {
	nc      uint64
	expires time.Time
}

func algHash(alg string) func() hash.Hash {
	switch alg {
	case algMD5:
		return md5.New
	case algSHA256:
		return sha256.New
	}
	return nil
}

func hexHash(alg string, parts ...string) string {
	h := algHash(alg)()
	io.WriteString(h, strings.Join(parts, ":"))
	return hex.EncodeToString(h.Sum(nil))
}

// parseAlgorithms parses -digest-algorithms: a comma-separated list of
// MD5 and SHA-256, in the order offered.
func parseAlgorithms(s string) ([]string, error) {
	var out []string
	for a := range strings.SplitSeq(s, ",") {
		a = strings.ToUpper(strings.TrimSpace(a))
		if a != algMD5 && a != algSHA256 {
			return nil, fmt.Errorf("unknown digest algorithm %q (want MD5, SHA-256)", a)
		}
		for _, o := range out {
			if o == a {
				return nil, fmt.Errorf("digest algorithm %s twice", a)
			}
		}
		out = append(out, a)
	}
	return out, nil
}

// loadUsers reads a users file (see above) for realm.
func loadUsers(path, realm string) (map[string]credential, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseUsers(f, realm)
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func parseUsers(r io.Reader, realm string) (map[string]credential, error) {
	users := make(map[string]credential)
	sc := bufio.NewScanner(r)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(text) == "" || strings.HasPrefix(strings.TrimSpace(text), "#") {
			continue
		}
		user, rest, ok := strings.Cut(text, ":")
		if !ok || user == "" || strings.ContainsAny(user, " \t\"@;<>") {
			return nil, fmt.Errorf("line %d: want user:password or user:realm:ha1", line)
		}
		cred := credential{ha1: make(map[string]string)}
		f := strings.Split(rest, ":")
		switch {
		case len(f) >= 2 && len(f) <= 3 && isHex(f[1], 32) && (len(f) == 2 || isHex(f[2], 64)):
			if f[0] != realm {
				return nil, fmt.Errorf("line %d: htdigest realm %q, want %q (the -domain)", line, f[0], realm)
			}
			cred.ha1[algMD5] = strings.ToLower(f[1])
			if len(f) == 3 {
				cred.ha1[algSHA256] = strings.ToLower(f[2])
			}
		default:
			if rest == "" {
				return nil, fmt.Errorf("line %d: empty password", line)
			}
			cred.ha1[algMD5] = hexHash(algMD5, user, realm, rest)
			cred.ha1[algSHA256] = hexHash(algSHA256, user, realm, rest)
		}
		if _, dup := users[userKey(user)]; dup {
			return nil, fmt.Errorf("line %d: user %q twice", line, user)
		}
		users[userKey(user)] = cred
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(users) == 0 {
		return nil, errors.New("no users")
	}
	return users, nil
}

func newDigestAuth(realm string, users map[string]credential, algs []string, now func() time.Time) *digestAuth {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return &digestAuth{realm: realm, users: users, algs: algs, key: key, now: now, counts: make(map[string]nonceCount)}
}

// nonce returns a fresh nonce: issue time, random bytes, HMAC.
func (d *digestAuth) nonce() string {
	var raw [16 + 16]byte
	binary.BigEndian.PutUint64(raw[:8], uint64(d.now().UnixNano()))
	_, _ = rand.Read(raw[8:16])
	m := hmac.New(sha256.New, d.key)
	m.Write(raw[:16])
	copy(raw[16:], m.Sum(nil))
	return base64.RawURLEncoding.EncodeToString(raw[:])
}

// checkNonce reports whether nonce is one of ours and whether it expired.
func (d *digestAuth) checkNonce(nonce string) (ours, expired bool, expires time.Time) {
	raw, err := base64.RawURLEncoding.DecodeString(nonce)
	if err != nil || len(raw) != 32 {
		return false, false, time.Time{}
	}
	m := hmac.New(sha256.New, d.key)
	m.Write(raw[:16])
	if !hmac.Equal(m.Sum(nil)[:16], raw[16:]) {
		return false, false, time.Time{}
	}
	issued := time.Unix(0, int64(binary.BigEndian.Uint64(raw[:8])))
	expires = issued.Add(nonceLifetime)
	return true, !d.now().Before(expires) || d.now().Before(issued.Add(-time.Minute)), expires
}

// challenges returns the WWW-Authenticate (or Proxy-Authenticate) headers
// of a 401 (407): one per algorithm, with a nonce each.
func (d *digestAuth) challenges(name string, stale bool) []sip.Header {
	var out []sip.Header
	for _, alg := range d.algs {
		v := fmt.Sprintf(`Digest realm="%s", nonce="%s", algorithm=%s, qop="auth"`, d.realm, d.nonce(), alg)
		if stale {
			v += ", stale=true"
		}
		out = append(out, sip.NewHeader(name, v))
	}
	return out
}

// authResult is the outcome of verify.
type authResult int

const (
	authNone   authResult = iota // no credentials for our realm: challenge
	authOK                       // the user proved who they are
	authStale                    // a good response with an expired nonce: challenge with stale=true
	authFailed                   // wrong credentials, unknown user, replay: challenge again
	authBusy                     // too many nonces in use: 503
)

// verify checks the credentials of req in header name (Authorization or
// Proxy-Authorization) and returns the user they prove.
func (d *digestAuth) verify(req *sip.Request, name string) (string, authResult) {
	result := authNone
	for _, h := range req.GetHeaders(name) {
		params, ok := parseDigest(h.Value())
		if !ok || params["realm"] != d.realm {
			continue
		}
		user, r := d.verifyOne(req, params)
		if r == authOK || r == authBusy {
			return user, r
		}
		result = max(result, r)
	}
	return "", result
}

func (d *digestAuth) verifyOne(req *sip.Request, p map[string]string) (string, authResult) {
	alg := p["algorithm"]
	if alg == "" {
		alg = algMD5
	}
	alg = strings.ToUpper(alg)
	if algHash(alg) == nil || p["qop"] != "auth" {
		return "", authFailed
	}
	cred, ok := d.users[userKey(p["username"])]
	ha1 := cred.ha1[alg]
	if !ok || ha1 == "" {
		return "", authFailed
	}
	ours, expired, expires := d.checkNonce(p["nonce"])
	if !ours {
		return "", authFailed
	}
	nc, err := strconv.ParseUint(p["nc"], 16, 32)
	if err != nil || len(p["nc"]) != 8 || p["cnonce"] == "" || p["uri"] == "" {
		return "", authFailed
	}
	// The digest-uri names this request's Request-URI (RFC 3261 §22.4):
	// credentials computed for another target are no good here.
	var du sip.Uri
	if sip.ParseUri(p["uri"], &du) != nil || du.User != req.Recipient.User || !strings.EqualFold(du.Host, req.Recipient.Host) || du.Port != req.Recipient.Port {
		return "", authFailed
	}
	ha2 := hexHash(alg, string(req.Method), p["uri"])
	want := hexHash(alg, ha1, p["nonce"], p["nc"], p["cnonce"], "auth", ha2)
	if subtle.ConstantTimeCompare([]byte(want), []byte(strings.ToLower(p["response"]))) != 1 {
		return "", authFailed
	}
	if expired {
		return "", authStale
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	last, seen := d.counts[p["nonce"]]
	if seen && nc <= last.nc {
		return "", authFailed // a replay
	}
	if !seen && len(d.counts) >= maxNonces {
		return "", authBusy
	}
	d.counts[p["nonce"]] = nonceCount{nc: nc, expires: expires}
	return p["username"], authOK
}

// sweep forgets the counts of expired nonces.
func (d *digestAuth) sweep() {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for n, c := range d.counts {
		if !now.Before(c.expires) {
			delete(d.counts, n)
		}
	}
}

// parseDigest parses the value of an Authorization header of the Digest
// scheme into lower-case names and unquoted values.
func parseDigest(v string) (map[string]string, bool) {
	scheme, rest, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "Digest") {
		return nil, false
	}
	out := make(map[string]string)
	s := rest
	for {
		s = strings.TrimLeft(s, " \t,")
		if s == "" {
			return out, true
		}
		eq := strings.IndexByte(s, '=')
		if eq <= 0 {
			return nil, false
		}
		name := strings.ToLower(strings.TrimSpace(s[:eq]))
		s = strings.TrimLeft(s[eq+1:], " \t")
		var val string
		if strings.HasPrefix(s, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(s) && s[i] != '"'; i++ {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				b.WriteByte(s[i])
			}
			if i >= len(s) {
				return nil, false
			}
			val, s = b.String(), s[i+1:]
		} else {
			end := strings.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			val, s = strings.TrimSpace(s[:end]), s[end:]
		}
		if _, dup := out[name]; dup {
			return nil, false
		}
		out[name] = val
	}
}
