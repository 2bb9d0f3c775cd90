package ft

import (
	"context"
	"time"
)

func contextWithDeadline(d time.Time) (context.Context, context.CancelFunc) {
	return context.WithDeadline(context.Background(), d)
}

// every calls f each period until stop is closed; a negative period
// disables it (Config.StatusEvery).
func every(stop <-chan struct{}, period time.Duration, f func()) {
	if period < 0 {
		return
	}
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			f()
		}
	}
}
