package ft

import (
	"context"
	"time"
)

func contextWithDeadline(d time.Time) (context.Context, context.CancelFunc) {
	return context.WithDeadline(context.Background(), d)
}
