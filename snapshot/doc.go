// Package snapshot saves a stopped VM, its vCPU, devices and guest memory,
// in one self-describing, versioned, checksummed encoding, and loads it
// into a new VM that continues where the saved one stopped. A file is the
// first use (ftvm run --snapshot/--restore); the encoding is the one a
// live clone of a running primary to a new backup is to send.
//
// # Format
//
// All integers little-endian:
//
//	magic "FTKVMSNP" | format version u32
//	| header length u32 | Header (msgpack)
//	| state length u32  | the vCPU and device states (msgpack)
//	| memory length u64 | guest memory: zstd of (page frame u32, 4096 bytes)
//	                      for every page that is not all zero, in
//	                      increasing order
//	| SHA-256 of everything before it
//
// The version comes first, so that a snapshot of another format is
// refused by name before anything else is read. The checksum is checked
// next, over the whole input, so that a truncated or corrupt snapshot is
// refused before any of it is decoded. Every length is then bounded by
// what is left of the input and by a limit of its own (MaxHeaderBytes,
// MaxStateBytes, the header's memory size for the pages), and the msgpack
// sections are checked before decoding (internal/mpack), so that even a
// crafted input with a valid checksum cannot make the decoder allocate
// more than a small multiple of its size.
//
// The header carries what a restoring VM must match (memory size, the
// CPUID table's hash, the device list, the guest's identity); Check
// compares them and says which differs.
//
// # Usage
//
//  1. Stop the run at a synchronous exit (a Driver whose Deliver returns
//     an error there, e.g. StopAfter), then Write the VM.
//  2. To restore: Decode the bytes, build a VM from File.Config (memory
//     size, a clock continuing the saved one, the CMOS epoch) with the
//     same devices in the same order, call File.Restore, and Run it.
package snapshot
