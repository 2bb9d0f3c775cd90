package virtio_test

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/ftkvm/ftkvm/devices/virtio"
)

// shout is a one-queue device that serves each request inside Notify: it
// writes back the request's bytes in upper case. Everything it does is a
// function of guest memory, so it needs no bounce buffer or logging.
type shout struct{}

func (shout) DeviceID() uint32                    { return 0x7f }
func (shout) Features() uint64                    { return 0 }
func (shout) NumQueues() int                      { return 1 }
func (shout) QueueMax(int) uint16                 { return 16 }
func (shout) ReadConfig(off uint64, data []byte)  {}
func (shout) WriteConfig(off uint64, data []byte) {}
func (shout) Reset()                              {}
func (shout) Notify(_ int, vq *virtio.Queue) {
	for {
		c, ok := vq.Pop()
		if !ok {
			return // empty, or the device is broken
		}
		in := make([]byte, c.ReadLen)
		if _, err := vq.Gather(&c, 0, in); err != nil {
			return
		}
		out := bytes.ToUpper(in)
		n, _ := vq.Scatter(&c, 0, out[:min(len(out), int(c.WriteLen))])
		if err := vq.Push(c.Head, uint32(n)); err != nil {
			return
		}
	}
}

// Example plays a guest driver: it brings the device up, posts one
// request (a readable and a writable buffer) and reads the answer.
func Example() {
	ram := virtio.FlatMemory{Base: 0x100000, Data: make([]byte, 0x10000)}
	dev, err := virtio.NewMMIO(shout{}, ram, func(high bool) { fmt.Println("irq", high) })
	if err != nil {
		panic(err)
	}
	reg := func(off uint64, v uint32) { dev.Write(off, binary.LittleEndian.AppendUint32(nil, v)) }
	le := binary.LittleEndian
	mem := func(gpa uint64, n int) []byte { b, _ := ram.Slice(gpa, n); return b }
	const desc, avail, used, req, resp = 0x100000, 0x101000, 0x102000, 0x103000, 0x104000

	reg(0x070, 1|2)     // ACKNOWLEDGE | DRIVER
	reg(0x024, 1)       // DriverFeaturesSel: bits 32..63
	reg(0x020, 1)       // VIRTIO_F_VERSION_1
	reg(0x070, 1|2|8)   // FEATURES_OK
	reg(0x038, 4)       // QueueNum
	reg(0x080, desc)    // QueueDescLow
	reg(0x090, avail)   // QueueDriverLow
	reg(0x0a0, used)    // QueueDeviceLow
	reg(0x044, 1)       // QueueReady
	reg(0x070, 1|2|8|4) // DRIVER_OK

	copy(mem(req, 5), "hello")
	d := mem(desc, 32)
	le.PutUint64(d[0:], req)
	le.PutUint32(d[8:], 5)
	le.PutUint16(d[12:], 1) // NEXT
	le.PutUint16(d[14:], 1)
	le.PutUint64(d[16:], resp)
	le.PutUint32(d[24:], 16)
	le.PutUint16(d[28:], 2)          // WRITE
	le.PutUint16(mem(avail+4, 2), 0) // ring[0] = head 0
	le.PutUint16(mem(avail+2, 2), 1) // idx = 1
	reg(0x050, 0)                    // QueueNotify

	n := le.Uint32(mem(used+8, 4))
	fmt.Printf("used idx %d, %d bytes: %s\n", le.Uint16(mem(used+2, 2)), n, mem(resp, int(n)))
	reg(0x064, 1) // InterruptACK
	// Output:
	// irq true
	// used idx 1, 5 bytes: HELLO
	// irq false
}
