package net

import (
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/ftkvm/ftkvm/bounce"
)

// A receive batch is what a backend returns for the device's standing
// receive: one or more records, each a frame's length (u16,
// little-endian) followed by the frame. The request says how much the
// guest has room for: at most Arg frames (1..RxBatchMax) in at most Len
// bytes (Arg records of the largest frame). A backend blocks until the
// first frame arrives, then adds the frames already waiting, without
// blocking again, while they fit. So one delivery point hands the guest
// every frame that arrived since the last one, up to its free buffers,
// instead of one frame per delivery point, each of which an FT primary
// logs and a backup must reach.
const recordHeader = 2

// RecordLen is the largest record in a receive batch.
const RecordLen = recordHeader + MaxFrame

// AppendFrame appends frame to a receive batch as one record. It is for
// backends written outside this package; frame must be 1..MaxFrame bytes.
func AppendFrame(batch, frame []byte) []byte {
	batch = binary.LittleEndian.AppendUint16(batch, uint16(len(frame)))
	return append(batch, frame...)
}

// nextFrame splits the first record off a batch; ok is false if the batch
// does not start with a whole record.
func nextFrame(batch []byte) (frame, rest []byte, ok bool) {
	if len(batch) < recordHeader {
		return nil, nil, false
	}
	n := int(binary.LittleEndian.Uint16(batch))
	if len(batch)-recordHeader < n {
		return nil, nil, false
	}
	return batch[recordHeader : recordHeader+n], batch[recordHeader+n:], true
}

// batcher builds receive batches for a backend from two sources: wait,
// which blocks until a frame arrives (or fails), and poll, which returns
// a frame already waiting or nil. A frame taken but not fitting the batch
// is held for the next one; frames of no bytes or longer than MaxFrame
// are discarded and counted.
type batcher struct {
	mu       sync.Mutex
	held     []byte
	oversize atomic.Uint64
}

func (b *batcher) fill(req bounce.Request, wait func() ([]byte, error), poll func() []byte) ([]byte, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	limit := int(min(max(req.Arg, 1), RxBatchMax))
	var batch []byte
	for n := 0; n < limit; {
		f := b.held
		b.held = nil
		if f == nil && n == 0 {
			var err error
			if f, err = wait(); err != nil {
				return nil, err
			}
		} else if f == nil {
			if f = poll(); f == nil {
				break
			}
		}
		switch {
		case len(f) == 0 || len(f) > MaxFrame || recordHeader+len(f) > req.Len:
			b.oversize.Add(1)
		case len(batch)+recordHeader+len(f) > req.Len:
			b.held = f
			return batch, nil
		default:
			batch = AppendFrame(batch, f)
			n++
		}
	}
	return batch, nil
}
