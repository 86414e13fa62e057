package sipws_test

import (
	"bytes"
	"testing"
	"time"

	"github.com/sipws/sipws"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResolveFlow(t *testing.T) {
	keyA := bytes.Repeat([]byte("a"), 32)
	keyB := bytes.Repeat([]byte("b"), 32)
	ft, err := sipws.NewFlowTokens("edge1", keyA)
	require.NoError(t, err)
	ts := startServer(t, sipws.Config{FlowTokens: ft})
	c := dialWS(t, ts.Addr, "sip")
	conn := ts.nextOpened(t)

	tok := conn.FlowToken()
	require.NotEmpty(t, tok)
	uri := sipws.FlowURI(tok, "edge1.example.com", 443, true)
	got, ok := sipws.TokenFromURI("<" + uri + ">")
	require.True(t, ok)
	require.Equal(t, tok, got)
	back, err := ts.ResolveFlow(got)
	require.NoError(t, err)
	assert.Equal(t, conn.ID(), back.ID())

	// Tampered: any changed character fails.
	bad := []byte(tok)
	bad[len(bad)/2] ^= 1
	_, err = ts.ResolveFlow(string(bad))
	assert.ErrorIs(t, err, sipws.ErrFlowInvalid)

	// A token of another node signed with our key is foreign.
	other, err := sipws.NewFlowTokens("edge2", keyA)
	require.NoError(t, err)
	_, err = ts.ResolveFlow(other.Token(conn.ID()))
	assert.ErrorIs(t, err, sipws.ErrFlowForeign)

	// Rotation: tokens signed with the old key still resolve.
	require.NoError(t, ts.SetFlowKeys(keyB, keyA))
	back, err = ts.ResolveFlow(tok)
	require.NoError(t, err)
	assert.Equal(t, conn.ID(), back.ID())
	assert.NotEqual(t, tok, conn.FlowToken(), "new tokens use the new key")
	require.NoError(t, ts.SetFlowKeys(keyB))
	_, err = ts.ResolveFlow(tok)
	assert.ErrorIs(t, err, sipws.ErrFlowInvalid, "the old key was dropped")
	tok = conn.FlowToken()

	// Gone: the connection ended.
	c.sendClose(1000, "")
	c.expectClose(1000, time.Second)
	ts.nextClosed(t)
	_, err = ts.ResolveFlow(tok)
	assert.ErrorIs(t, err, sipws.ErrFlowGone)
}

func TestResolveFlowWithoutTokens(t *testing.T) {
	ts := startServer(t, sipws.Config{})
	dialWS(t, ts.Addr, "sip")
	conn := ts.nextOpened(t)
	assert.Empty(t, conn.FlowToken())
	_, err := ts.ResolveFlow("anything")
	assert.ErrorIs(t, err, sipws.ErrNoFlowTokens)
	assert.ErrorIs(t, ts.SetFlowKeys(bytes.Repeat([]byte("k"), 32)), sipws.ErrNoFlowTokens)
}
