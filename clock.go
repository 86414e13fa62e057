package sipws

import "time"

// clock is the source of time for keepalive and timeouts. Tests inject a
// manual clock so that timeouts are tested without sleeping; nil in Config
// means the real clock.
type clock interface {
	// Now returns the current time.
	Now() time.Time
	// NewTicker returns a ticker that ticks every d.
	NewTicker(d time.Duration) ticker
}

// ticker is the part of *time.Ticker a clock gives out.
type ticker interface {
	// C returns the channel on which ticks are delivered.
	C() <-chan time.Time
	// Stop turns the ticker off.
	Stop()
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) NewTicker(d time.Duration) ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (t realTicker) C() <-chan time.Time { return t.t.C }
func (t realTicker) Stop()               { t.t.Stop() }
