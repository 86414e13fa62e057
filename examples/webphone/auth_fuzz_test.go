package main

import (
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
)

// FuzzDigestVerify feeds the digest check any Authorization value: it never
// panics and, without the password, never proves a user.
func FuzzDigestVerify(f *testing.F) {
	for _, s := range []string{
		`Digest username="alice", realm="sipws.test", nonce="x", uri="sip:sipws.test", response="0", algorithm=MD5, qop=auth, nc=00000001, cnonce="c"`,
		`Digest realm="sipws.test", username="a\"b", nonce=`, `Digest ,,,`, `Basic abc`, `Digest a="`, `Digest a=b, a=c`, ``,
	} {
		f.Add(s)
	}
	users, err := parseUsers(strings.NewReader("alice:pw\n"), testDomain)
	if err != nil {
		f.Fatal(err)
	}
	d := newDigestAuth(testDomain, users, []string{algSHA256, algMD5}, time.Now)
	f.Fuzz(func(t *testing.T, v string) {
		req := sip.NewRequest(sip.REGISTER, sip.Uri{Host: testDomain})
		req.AppendHeader(sip.NewHeader("Authorization", v))
		if user, res := d.verify(req, "Authorization"); res == authOK {
			t.Fatalf("%q proves %q", v, user)
		}
		_, _ = parseDigest(v)
	})
}
