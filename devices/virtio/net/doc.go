// Package net is a virtio-net device model (virtio 1.1, 5.1) behind the
// virtio-mmio transport, with both data paths through a bounce.Engine:
// received frames reach the guest only at logged delivery points, and
// transmitted frames leave only as engine write requests, which an FT
// primary holds for output commit and a replaying backup never performs.
//
// Like the transport, it is a plain state machine driven from the vCPU
// thread: no goroutines, no timers, no clock. The engine's backend does the
// I/O on goroutines of its own: Endpoint (an in-process link, NewLink),
// Tap (a Linux tap interface) or UDP (a frame socket: one frame per UDP
// datagram, for where no tap can be made; it talks to one peer, given or
// learned from the first datagram, and drops other sources' datagrams).
//
// # What the device offers
//
// One receive queue (receiveq1, queue 0) and one transmit queue
// (transmitq1, queue 1), QueueMax entries each, and the features
// VIRTIO_NET_F_MAC (the Config's MAC in config space), VIRTIO_NET_F_STATUS
// (the link is always up) and VIRTIO_NET_F_MTU (1500: a Linux driver then
// refuses a larger MTU rather than send frames the device would drop).
// The config space is read-only.
//
// Nothing else: no checksum offload (VIRTIO_NET_F_CSUM, GUEST_CSUM), no
// segmentation offload (GSO, HOST_TSO*, GUEST_TSO*, UFO), no mergeable
// receive buffers (MRG_RXBUF), no control queue (CTRL_VQ, so no MAC
// filters or promiscuous mode: every frame the backend receives goes to
// the guest), no multiqueue. It is the simplest model that keeps both
// paths exact: every chain carries one Ethernet frame of at most MaxFrame
// bytes behind a virtio_net_hdr the device neither acts on nor fills
// beyond num_buffers, and nothing depends on what the host's network
// stack can offload, which may differ between the primary's host and the
// host a backup goes live on. The guest computes its own checksums.
//
// # The transmit path: output
//
// On a transmit notification the device pops each chain and checks it:
// driver-readable only, a HeaderLen-byte header whose flags and gso_type
// are zero (no offload was negotiated), then a frame of MinFrame to
// MaxFrame bytes, on any descriptor boundaries. A chain that fails is
// given back at once with nothing written and counted (Stats.TxDropped).
// Otherwise the device copies the frame out of guest memory (on the vCPU
// thread, at the notification: a deterministic point), gives the chain
// back at once, so the guest may reuse the buffer, and submits the frame
// as bounce.Request{Tag, Len, Write: true, Data: frame, Ordered: true}.
// Ordered: the engine serves a device's frames one at a time in guest
// order, as a NIC's ring would, instead of racing its goroutines.
//
// Completing the chain before the frame has left is safe because the
// frame was copied at a deterministic point: the guest's view (used ring,
// interrupt) is the same on a replaying backup, whatever the network
// does. What bounds host memory is MaxTxInFlight: with that many frames
// in flight the device leaves further chains in the ring, and takes them
// when a transmit completion frees room. That is deterministic too: the
// completion (tag, error) is delivered at a logged point like any other.
// A transmit completion touches no guest memory; a backend error is only
// counted (Stats.TxErrors): a network may lose frames.
//
// # The receive path: logged input
//
// Frames arrive unsolicited, so the device keeps one receive standing on
// the engine: bounce.Request{Tag, Len, Arg, Upto: true}, whose backend
// blocks until a frame arrives. It returns a receive batch (AppendFrame):
// that frame and those already waiting behind it, at most Arg frames in
// Len bytes, where Arg is the number of receive buffers the guest had
// available when the device submitted the request (at least 1, at most
// RxBatchMax). One delivery point thus delivers a burst, not one frame.
//
// Complete takes the batch at a delivery point: for each frame it pops a
// receive chain (device-writable only, at least HeaderLen plus the frame),
// writes a virtio_net_hdr that is zero but for num_buffers = 1 and then
// the frame, and pushes the chain with HeaderLen+len(frame) written. A
// frame with no chain to take is dropped (Stats.RxNoBuffer); a chain that
// is readable or too small is given back with nothing written and its
// frame dropped (Stats.RxBadBuffer). Then the next receive is submitted.
//
// The receive path is armed by the driver's first notification (on either
// queue) after a reset: Linux posts its receive buffers and notifies once
// the device is up. A backend error (a closed link) disarms it until the
// next notification, so a dead backend cannot fail in a loop.
//
// # Determinism
//
//  1. Data enters guest memory from outside only in Complete, which the
//     VMM calls on the vCPU thread at a delivery point where the recorder
//     logs the completion (tag, data, error) and the replayer feeds it
//     back. Every other decision (which chains are taken, which frames are
//     dropped, when a receive is submitted and for how many frames) is a
//     function of guest memory and the device's state at a notification
//     or a delivery point, so a backup whose engine is in replay mode
//     never calls the backend and ends in the same state.
//  2. Transmitted frames are outputs. They reach the engine as Requests
//     with Write set, and nothing reaches the network but through the
//     engine: an FT primary can hold them until the backup has
//     acknowledged the log up to them (output commit), and a backup
//     performs none (on going live, SetLive re-issues the ones whose
//     completion the log lacked, with their data: a frame may be sent
//     twice, never lost).
//  3. A reset cannot cancel the standing receive: the backend is blocked
//     in it. It stays the device's one receive in flight (the device
//     submits another only once it completed, so there are never two) and
//     its frames go to whatever driver is running when it completes, or
//     are dropped if none has posted buffers: a frame is a frame, not an
//     answer to a request. The device stands no new receive until the new
//     driver notifies. Frames in flight across a reset complete as usual;
//     their chains were given back long before.
//
// # Usage
//
// In an ftkvm VM, the VMM places the interface, gives it a slot on its
// bounce engine and does the wiring below (vmm.VM.AddVirtio):
//
//	guestEnd, world := net.NewLink() // or net.OpenTap("ftkvm%d"), net.OpenUDP(cfg)
//	dev, err := vm.AddVirtio(net.Attachment(net.Config{MAC: mac}, guestEnd.Backend()))
//
// Another VMM wires it by hand:
//
//	engine := bounce.NewEngine(guestEnd.Backend())
//	dev, mmio, err := net.NewMMIO(net.Config{MAC: mac}, engine, mem,
//		func(high bool) { pic.SetIRQ(irq, high) })
//	bus.Register(base, virtio.WindowSize, mmio)
//
// with virtio_mmio.device=0x200@<base>:<irq> on the guest's command line
// (virtio.KernelArg). The caller's duties:
//
//  1. Call every method on the vCPU thread (the transport's rule).
//  2. Deliver each completion the engine polls to Complete at a delivery
//     point, and tell the engine (Engine.Delivered). Devices sharing an
//     engine need tag ranges of their own (Config.TagBase).
//  3. If the device is built with New, call Attach with its transport
//     (virtio.Attach does both).
//  4. An FT primary holds each transmit write until the backup has
//     acknowledged the log up to the point where it was submitted; the
//     standing receive means the engine always has a transfer in flight,
//     which is right: a frame may wake a halted guest.
//  5. A backup going live calls Engine.SetLive (which re-issues the held
//     frames and the standing receive on the live backend), then sends
//     GratuitousARP for the guest (if its IPv4 address is known) so the
//     network learns the guest's new port.
//  6. For snapshots, Save the device beside the transport's MMIOState;
//     Restore both, then call Resubmit so the engine knows the transfers
//     in flight.
package net
