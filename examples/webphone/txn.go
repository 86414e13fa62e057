package main

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sipws/sipws"
)

// Transaction lifetimes. A non-INVITE transaction lives 64*T1 = 32 s
// (Timer F); an INVITE transaction waits up to 3 minutes for a final
// response (Timer C, RFC 3261 §16.6 step 11), then 32 s more to absorb the
// ACK of a non-2xx and late 2xx retransmissions.
const (
	nonInviteLifetime = 32 * time.Second
	inviteTimerC      = 3 * time.Minute
	afterFinal        = 32 * time.Second
)

// Budgets of the transaction table: what it holds of the requests it
// follows (their headers: bodies are dropped once sent) plus txnOverhead a
// transaction and a branch, per source connection and in all. A request
// beyond them is answered 503 and not forwarded.
const (
	txnOverhead        = 512
	maxTxnBytesPerConn = 2 << 20
	maxTxnBytes        = 64 << 20
)

// branchPrefix starts every branch this proxy puts in its Via: the RFC 3261
// magic cookie and a mark of ours.
const branchPrefix = sip.RFC3261BranchMagicCookie + ".sws."

var branchEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newBranch returns a fresh branch for a Via of ours.
func newBranch() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return branchPrefix + strings.ToLower(branchEncoding.EncodeToString(b[:]))
}

// txnKey names a server transaction by the connection a request came on
// and the branch of its top Via (RFC 3261 §17.2.3). ACK and CANCEL find
// their INVITE with method INVITE.
type txnKey struct {
	src    sipws.ConnID
	branch string
	method string
}

// proxyTxn is what the proxy remembers of a request it forwarded: where it
// came from (so that responses go back there), the branches it went out on,
// and what was answered.
type proxyTxn struct {
	key      txnKey
	orig     *sip.Request // the request as received, for responses of our own
	branches []*proxyBranch
	final    int // the final status sent upstream; 0 while none
	best     *sip.Response
	canceled bool
	deadline time.Time
	size     int // bytes held, counted in the table's budgets
}

func (t *proxyTxn) invite() bool { return t.key.method == string(sip.INVITE) }

// pending reports whether some branch has no final response yet.
func (t *proxyTxn) pending() bool {
	for _, b := range t.branches {
		if b.status == 0 {
			return true
		}
	}
	return false
}

// proxyBranch is one copy of a request sent to one connection.
type proxyBranch struct {
	txn           *proxyTxn
	id            string // the branch of our Via
	dst           sipws.ConnID
	req           *sip.Request // as sent: CANCEL and ACK are built from it
	provisional   bool         // a 1xx came back (CANCEL may be sent)
	cancelPending bool         // CANCEL asked for before any 1xx
	status        int          // final status; 0 while none
}

// txnTable holds the proxy's transactions. Its lock is held only to look up
// and update; nothing is sent with it held.
type txnTable struct {
	mu       sync.Mutex
	byKey    map[txnKey]*proxyTxn
	byBranch map[string]*proxyBranch
	bytes    int                  // sum of the sizes held
	bySrc    map[sipws.ConnID]int // the same per source connection
}

func newTxnTable() *txnTable {
	return &txnTable{byKey: make(map[txnKey]*proxyTxn), byBranch: make(map[string]*proxyBranch), bySrc: make(map[sipws.ConnID]int)}
}

// add records t and its branches, replacing a transaction with the same key
// (a retransmission of a request whose transaction we no longer follow),
// when its size fits the budgets; else it reports false and records
// nothing.
func (tt *txnTable) add(t *proxyTxn) bool {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	t.size += txnOverhead * (1 + len(t.branches))
	if old := tt.byKey[t.key]; old != nil {
		tt.removeLocked(old)
	}
	// A link from another node carries the requests of all its phones:
	// only the table's budget bounds it.
	perSrc := tt.bySrc[t.key.src]+t.size > maxTxnBytesPerConn && !isPeerID(t.key.src)
	if perSrc || tt.bytes+t.size > maxTxnBytes {
		return false
	}
	tt.byKey[t.key] = t
	for _, b := range t.branches {
		tt.byBranch[b.id] = b
	}
	tt.bytes += t.size
	tt.bySrc[t.key.src] += t.size
	return true
}

func (tt *txnTable) removeLocked(t *proxyTxn) {
	if tt.byKey[t.key] != t {
		return
	}
	delete(tt.byKey, t.key)
	for _, b := range t.branches {
		if tt.byBranch[b.id] == b {
			delete(tt.byBranch, b.id)
		}
	}
	tt.bytes -= t.size
	if tt.bySrc[t.key.src] -= t.size; tt.bySrc[t.key.src] <= 0 {
		delete(tt.bySrc, t.key.src)
	}
}

// held returns the bytes held in all and for source connection src.
func (tt *txnTable) held(src sipws.ConnID) (total, bySrc int) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return tt.bytes, tt.bySrc[src]
}

func (tt *txnTable) len() int {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return len(tt.byKey)
}
