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

// Names the external tests use that are not part of the API.
const (
	DefaultSubprotocols       = defaultSubprotocols
	DefaultMaxMessageSize     = defaultMaxMessageSize
	MaxMaxMessageSize         = maxMaxMessageSize
	DefaultReadBufferSize     = defaultReadBufferSize
	DefaultCloseTimeout       = defaultCloseTimeout
	DefaultWriteTimeout       = defaultWriteTimeout
	DefaultFrameTimeout       = defaultFrameTimeout
	DefaultSendQueueSize      = defaultSendQueueSize
	DefaultKeepaliveTimeout   = defaultKeepaliveTimeout
	DefaultKeepaliveInterval  = defaultKeepaliveInterval
	DefaultKeepaliveWorkers   = defaultKeepaliveWorkers
	DefaultPongWait           = defaultPongWait
	DefaultIPv6PrefixLen      = defaultIPv6PrefixLen
	DefaultCloseCode          = defaultCloseCode
	DefaultCloseReason        = defaultCloseReason
	DefaultDumpLimit          = defaultDumpLimit
	DefaultPingData           = defaultPingData
	DefaultMessageTimeout     = defaultMessageTimeout
	DefaultMaxPartialBytes    = defaultMaxPartialBytes
	DefaultMaxKeptHeaderBytes = defaultMaxKeptHeaderBytes
	MaxRPCRequestSize         = maxRPCRequestSize
	ReplacedReason            = replacedReason
)

var (
	ErrInvalidCloseCode     = errInvalidCloseCode
	ErrInvalidCloseReason   = errInvalidCloseReason
	ErrControlTooLong       = errControlTooLong
	ErrNoFlowTokens         = errNoFlowTokens
	ParseCORSMode           = parseCORSMode
	ParseKeepaliveMechanism = parseKeepaliveMechanism
	ParseDumpOrder          = parseDumpOrder
	ParseSubprotocols       = parseSubprotocols
	CheckSIP                = checkSIP
	CheckMSRP               = checkMSRP
	FlowURI                 = flowURI
)

type (
	ConfigError  = configError
	FramingError = framingError
	Clock        = clock
	Ticker       = ticker
)

// WithClock returns cfg with the manual clock clk.
func WithClock(cfg Config, clk Clock) Config { cfg.clock = clk; return cfg }

// CauseFailed is CloseCause.failed.
func CauseFailed(c CloseCause) bool { return c.failed() }

// SIPFlow is the n-th run of a JsSIP register + call + MESSAGE flow, as the
// compression tests and benchmarks send it.
func SIPFlow(n int) []string { return sipFlow(n) }

// DeflateHistory is how many bytes of what it sent compressed the
// connection keeps (permessage-deflate).
func (c *Conn) DeflateHistory() int {
	if c.dfl == nil {
		return 0
	}
	c.dfl.mu.Lock()
	defer c.dfl.mu.Unlock()
	return cap(c.dfl.hist)
}
