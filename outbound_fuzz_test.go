package sipws

import (
	"strings"
	"testing"
)

// FuzzFlowKey checks the normalisation of BindInstance's arguments, which
// come from a peer's REGISTER: it never panics, a canonical AOR is a SIP or
// SIPS URI without parameters that normalises to itself, and so does a
// normalised +sip.instance.
func FuzzFlowKey(f *testing.F) {
	for _, s := range []string{
		"sip:alice@example.com",
		`"Alice" <sip:%61lice;day=x@Example.COM:05060;user=phone?subject=y>;tag=1`,
		"sips:[2001:DB8::1]:5061;transport=ws",
		"sip:a:p%40ss@h",
		"<sip:alice@example.com",
		"tel:+1555",
		"",
	} {
		f.Add(s, `"<urn:uuid:F81D4FAE-7DEC-11D0-A765-00A0C91E6BF6>"`)
	}
	f.Fuzz(func(t *testing.T, aor, instance string) {
		a, err := normalizeAOR(aor)
		if err == nil {
			if !strings.HasPrefix(a, "sip:") && !strings.HasPrefix(a, "sips:") {
				t.Fatalf("normalizeAOR(%q) = %q: no sip or sips scheme", aor, a)
			}
			again, err := normalizeAOR(a)
			if err != nil || again != a {
				t.Fatalf("normalizeAOR(%q) = %q, but normalizing it again gives %q, %v", aor, a, again, err)
			}
			if strings.ContainsAny(a, " \t\r\n<>\"") {
				t.Fatalf("normalizeAOR(%q) = %q", aor, a)
			}
		}
		inst := normalizeInstance(instance)
		if again := normalizeInstance(inst); again != inst {
			t.Fatalf("normalizeInstance(%q) = %q, then %q", instance, inst, again)
		}
		if k, err := flowKey(aor, instance, 1); err == nil {
			if len(k.aor) > maxFlowKeyLen || len(k.instance) > maxFlowKeyLen || k.instance == "" {
				t.Fatalf("flowKey(%q, %q) = %+v", aor, instance, k)
			}
		}
	})
}
