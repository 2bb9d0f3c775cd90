// Package blk is a virtio-blk device model (virtio 1.1, 5.2) behind the
// virtio-mmio transport, with its data path through a bounce.Engine so
// that disk reads reach the guest only at logged delivery points.
//
// Like the transport, it is a plain state machine driven from the vCPU
// thread: no goroutines, no timers, no clock. The engine's backend does
// the I/O on goroutines of its own; FileBackend serves a raw image file.
//
// # What the device offers
//
// One request queue (QueueMax entries); VIRTIO_BLK_F_SIZE_MAX and
// VIRTIO_BLK_F_SEG_MAX (SizeMax, SegMax: a Linux driver then never builds
// a request longer than MaxDataLen, or a chain longer than the queue),
// VIRTIO_BLK_F_BLK_SIZE (512), VIRTIO_BLK_F_FLUSH, and VIRTIO_BLK_F_RO for
// a read-only Config. The config space holds capacity, size_max, seg_max,
// geometry (zero: not offered) and blk_size; it is read-only. Requests:
// IN (read), OUT (write), FLUSH and GET_ID; any other type completes with
// VIRTIO_BLK_S_UNSUPP.
//
// # The request path
//
// Notify pops every available chain and parses it. The chain's bytes, on
// whatever descriptor boundaries, must be: readable, the 16-byte header
// (type, reserved, sector) then a write's data; writable, a read's data
// (or the ID) then the status byte, the chain's last writable byte. A read
// or write moves whole sectors, at most MaxDataLen bytes, inside the
// disk. A chain without a writable byte is pushed back at once with
// nothing written (there is nowhere to put a status); any other malformed
// request completes at once with VIRTIO_BLK_S_IOERR. GET_ID (the ID
// configured, NUL-padded to IDLen bytes), reads and writes of no sectors,
// and flushes of a read-only disk also complete inside Notify: they depend
// only on guest memory and the configuration, so they need no logging.
//
// Reads, writes and flushes get a tag (tags follow guest order) and join
// a FIFO of waiting requests. A waiting request is submitted to the engine
// as a bounce.Request once no earlier request it conflicts with is in
// flight or waiting (see below), and while fewer than MaxInFlight are in
// flight:
//
//   - a read: Request{Tag, Len, Arg: byte offset};
//   - a write: Request{Tag, Len, Arg, Write: true, Data}, the data
//     gathered from the guest's buffers at submission, on the vCPU thread;
//   - a flush: Request{Tag, Write: true} with no data: the backend makes
//     every write it has completed durable (FileBackend: fsync).
//
// Complete takes the transfer's completion at a delivery point: for a
// read it scatters the data into the chain; then it writes the status
// (VIRTIO_BLK_S_IOERR if the backend failed), pushes the chain (the
// transport raises the used-buffer interrupt) and submits the waiting
// requests this one held back.
//
// # Determinism
//
//  1. Data enters guest memory from outside only in Complete, which the
//     VMM calls on the vCPU thread at a delivery point where the recorder
//     logs the completion (tag, data, error) and the replayer feeds it
//     back. Everything else the device does is a function of guest memory,
//     its state, and the order of those completions, so the backup's
//     device, with its engine in replay mode, never calls the backend and
//     ends in the same state.
//  2. Overlapping requests are serialized in guest order: a request waits
//     until every earlier request it conflicts with has completed. Two
//     overlapping writes racing on the host disk would leave whichever
//     landed last, an order the backup cannot reproduce (its copy of the
//     disk, or the disk it takes over, would differ from what the guest
//     was told). A read overlapping a write is held too: its data would be
//     logged either way, but then every outcome, in the guest and on the
//     disk, is that of running the requests one by one in guest order,
//     whatever the host's timing. Two reads never conflict. A flush waits
//     for every earlier write; nothing waits for a flush. So the transfers
//     in flight at any time commute, which is what makes re-issuing them
//     all at once safe (bounce.Engine.SetLive, Resubmit).
//  3. Writes are outputs. They reach the engine as Requests with Write
//     set, and nothing reaches the disk but through the engine: an FT
//     primary can hold them until the backup has acknowledged the log up
//     to them (output commit), and a backup sharing the disk performs
//     none (its engine is in replay mode; on going live, SetLive re-issues
//     the ones whose completion the log lacked, with their data). That
//     wiring belongs to the VMM and FT layers, not here.
//  4. A reset (or a disabled queue) cannot cancel transfers in flight: the
//     backend may be inside a pwrite. They stay in the in-flight table as
//     orphans: their completions only free their disk range (new requests
//     overlapping them keep waiting, by rule 2), and touch no guest memory
//     (their chains are stale: Queue.Valid). Waiting requests are dropped.
//
// # Usage
//
// In an ftkvm VM, the VMM places the disk, gives it a slot on its bounce
// engine and does the wiring below (vmm.VM.AddVirtio):
//
//	img, _ := blk.NewFileBackend(f)
//	dev, err := vm.AddVirtio(blk.Attachment(blk.Config{Capacity: img.Capacity(), ID: "disk0"},
//		img.Backend(), blk.DiskOptions{Identity: "size=1048576"}))
//
// Another VMM wires it by hand:
//
//	engine := bounce.NewEngine(img.Backend())
//	dev, mmio, err := blk.NewMMIO(blk.Config{Capacity: img.Capacity(), ID: "disk0"},
//		engine, mem, func(high bool) { pic.SetIRQ(irq, high) })
//	bus.Register(base, virtio.WindowSize, mmio)
//
// The caller's duties:
//
//  1. Call every method on the vCPU thread (the transport's rule).
//  2. Deliver each completion the engine polls to Complete at a delivery
//     point, and tell the engine (Engine.Delivered). Devices sharing an
//     engine need tag ranges of their own (Config.TagBase).
//  3. If the device is built with New, call Attach with its transport
//     (virtio.Attach does both).
//  4. For snapshots, Save the device beside the transport's MMIOState;
//     Restore both, then call Resubmit so the engine knows the transfers
//     in flight.
package blk
