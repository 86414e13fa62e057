package sipws

// Test hooks. A Server issues and resolves flow tokens with the nonce of its
// own run, which the package does not expose; the external tests of the
// token format use a FlowIssuer, which does the same with a run of its own.

// FlowIssuer issues and checks the flow tokens of f for one run, as a Server
// does.
type FlowIssuer struct {
	f   *FlowTokens
	run flowRun
}

// NewFlowIssuer returns a FlowIssuer of f with a new random run.
func NewFlowIssuer(f *FlowTokens) *FlowIssuer { return &FlowIssuer{f: f, run: newFlowRun()} }

// Node is FlowTokens.Node.
func (i *FlowIssuer) Node() string { return i.f.Node() }

// Token is the token of id in this run.
func (i *FlowIssuer) Token(id ConnID) string { return i.f.token(i.run, id) }

// Parse checks a token against this run.
func (i *FlowIssuer) Parse(token string) (ConnID, error) { return i.f.parse(i.run, token) }

// WithKeys is the same run with other keys, as Server.SetFlowKeys does.
func (i *FlowIssuer) WithKeys(key []byte, previous ...[]byte) (*FlowIssuer, error) {
	f, err := i.f.withKeys(key, previous...)
	if err != nil {
		return nil, err
	}
	return &FlowIssuer{f: f, run: i.run}, nil
}
