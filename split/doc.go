// Package split keeps an FT pair from splitting its brain: when the primary
// and the backup lose sight of each other, each races to claim the pair on
// shared storage with an atomic test-and-set, and only the winner runs the
// VM. The rule:
//
//   - the winner goes live (or, if it is the primary, goes on alone);
//   - the loser halts itself and says so, naming the winner;
//   - a node that cannot reach the storage, or cannot read a trustworthy
//     answer from it, does not go live.
//
// Arbiter is the interface, so other arbiters (a quorum service, a SCSI
// reservation) can be added; FileArbiter, a directory on storage both
// hosts mount (NFS, or a cluster filesystem), is the default, and
// EtcdArbiter puts the claims on an etcd cluster (see "On etcd" below).
//
// # Usage
//
//	a, err := split.NewFileArbiter(split.FileConfig{
//		Dir: "/mnt/ft", Pair: "vm1", Node: hostname, Generation: gen,
//	})
//	...
//	// The peer is silent past the failure-detection timeout:
//	switch err := a.TestAndSet(ctx); {
//	case err == nil:
//		goLive()
//	case errors.Is(err, split.ErrLost):
//		log.Print(err) // names the winner
//		halt()
//	default: // ErrUnreachable, ErrCorrupt: stay down, retry or halt
//		log.Print(err)
//	}
//	...
//	// Re-protection, on the live node, before the new backup joins:
//	next, err := a.Advance(ctx) // give next to the new backup
//
// The caller's duties:
//
//  1. Call TestAndSet once the peer is declared failed and before going
//     live: the backup before it switches its devices to real backends,
//     the primary before it releases any output that the backup has not
//     acknowledged. Only nil means go; every error means do not.
//  2. On ErrLost, halt and log the error. It names the winner, its claim
//     time and the record's path.
//  3. On any other error, do not go live. Retrying TestAndSet is allowed
//     and safe; a primary that cannot reach the storage stops releasing
//     output. Note that an attempt that timed out may still complete later
//     (see Timeouts): then the generation belongs to this node although it
//     was told ErrUnreachable, the peer halts on ErrLost, and nobody runs
//     until this node retries. That is the safe side of the failure.
//  4. Give both nodes of a pair the same Generation, taken from the pair's
//     own handshake, and different Node names. When a new backup joins,
//     the live node calls Advance and hands the returned generation to it.
//  5. Never remove claim files while a pair whose generation they cover
//     may still run: they are the decisions. Old generations' files are
//     about 150 bytes each; an operator may delete a pair's files once the
//     whole pair is gone.
//
// # Generations
//
// A claim is for one pair generation: the generation starts when a backup
// joins (the first pair at 1) and ends when a new backup is cloned from
// the live node. A node learns its generation from the pair's handshake,
// never from the storage: a backup that was replaced while cut off from
// the network would otherwise read the new generation, find it unclaimed,
// and win it while the real pair runs. Instead it claims its own,
// generation G, and Advance guarantees that G is already taken: the live
// node claims G (a no-op if it won G at failover) before moving to G+1.
// So every generation below a pair's current one is claimed, and a node
// of an old generation can only lose.
//
// # The file protocol, and why it is atomic
//
// The claim for generation G of pair P is the file Dir/P.gG.claim. It is
// created once and never changed or removed, so whatever it says is the
// decision. To claim, a node:
//
//  1. reads the claim; if it exists, it names the winner (this node, when
//     re-claiming, or the other);
//  2. writes its record (pair, generation, node, time, CRC32C) to a new
//     uniquely named file Dir/.P.gG.<random>.tmp, and fsyncs it;
//  3. link(2)s that file to the claim name, ignoring EEXIST;
//  4. reads the claim back: it won if the record there names it; then it
//     fsyncs Dir so the name is durable before it goes live.
//
// The test-and-set is link(2). On a local POSIX filesystem (ext4, XFS,
// Btrfs...) link fails with EEXIST if the new name exists, and the kernel
// checks and inserts the name in one step under the directory's lock, so
// of any number of concurrent links to one name exactly one succeeds. On
// NFS the client sends a single LINK call and the server runs that same
// link on its filesystem, so the server is the one place where the race
// is decided; every NFS version, v2 included, has done so, which is why
// "link a unique file, then check" is the classic NFS-safe lock. One NFS
// hazard remains: if a LINK's reply is lost, the client retransmits, and
// the server may answer the duplicate with EEXIST although the first call
// succeeded. Step 4 does not trust link's answer: the record in the claim
// file, which names its owner, decides. (The idiom's other form, checking
// that the temporary file's link count is 2, answers the same question
// from attributes the client may cache; the record is read from the
// server once the file is opened, by close-to-open consistency.)
//
// The alternative, open(2) with O_CREAT|O_EXCL on the claim name, is
// atomic locally and on NFSv3 and v4 (exclusive create with a verifier)
// but not on NFSv2, where the client emulates it with a lookup and a
// create. Worse, the name would exist before its content: a loser could
// read an empty or partial record and be unable to name the winner, and a
// winner that crashed between create and write would leave an empty claim
// that proves nothing. With link, the claim name appears only when its
// complete, synced record exists, so a claim file that does not parse is
// corruption (ErrCorrupt), not a race.
//
// Caching cannot cause a wrong win. A cached claim name is never stale,
// since claims never change or go away. A cached absence (a negative
// dentry) can only make a node attempt a link, which the server decides.
// The storage must support hard links: SMB without Unix extensions, FAT
// and some FUSE filesystems do not, and there every claim fails with
// ErrUnreachable, so nobody goes live — check at deployment. fsync of the
// directory is skipped where the filesystem rejects it with EINVAL; an
// NFS server exported with sync commits LINK before it answers (see below).
//
// A claim path that is not a regular file (a FIFO, a socket, a device, a
// directory) is refused with ErrCorrupt and never claimed. Claims are
// opened with O_NONBLOCK, so a FIFO without a writer cannot hold the
// arbiter in open(2).
//
// # NFS: what the export and the mount must be
//
// All of the above is about which LINK the server performs first. It also
// takes the server's word that a LINK it acknowledged, and the record it
// acknowledged writing, are on its disk; only some configurations keep
// that word, and the arbiter cannot check them from the client:
//
//   - Export the directory with sync (exports(5); the default of current
//     nfs-utils, but say it). With async the server acknowledges a LINK,
//     a WRITE and a COMMIT before they reach its disk: if it then crashes
//     or loses power, a claim a node was told it won, and went live on,
//     disappears; the other node finds the generation unclaimed, wins it
//     too, and two VMs run. The server's own disks must honour flushes
//     (no volatile write cache that ignores them), for the same reason.
//   - Mount hard (the default), not soft: Timeouts below is what bounds a
//     hung server, and a soft mount turns a slow server into errors for
//     requests the server may still carry out. Keep close-to-open
//     consistency (no nocto): the read-back of step 4 relies on it.
//   - File locks play no part: the arbiter takes none, so lockd/NLM and
//     the nolock or local_lock options make no difference to it.
//
// A cluster filesystem must likewise make a link durable before link(2)
// returns, or by the fsync of Dir that follows.
//
// # Timeouts
//
// A hung NFS hard mount blocks the calling thread in the kernel, where no
// signal or context reaches it. Every FileArbiter operation therefore runs
// its syscalls on a separate goroutine and waits at most FileConfig.Timeout
// (default 2 s) or until ctx ends, then returns ErrUnreachable. The
// goroutine may stay blocked; it holds the arbiter's single storage slot
// until it returns, so further operations report ErrUnreachable too
// instead of piling up blocked threads. If the storage comes back, the
// abandoned call finishes, and a claim it makes stands (see duty 3).
// Missing directories, permission errors, I/O errors and a full disk are
// ErrUnreachable too, with the path in the message.
//
// # On etcd
//
// For many pairs on many hosts without a shared filesystem, EtcdArbiter
// keeps the same decisions in an etcd cluster (Open takes
// "etcd://host1:2379,host2:2379,..."; TLS with EtcdConfig's CAFile,
// CertFile and KeyFile). Its semantics are the file arbiter's: the claim
// of generation G is created once and never changed or removed, so there
// is one winner per generation; Owner, Advance, Latest and Generation
// behave the same; every error wraps the same sentinels.
//
// The claim is one transaction: if <Prefix><Pair>/claim/<G> was never
// created (create revision 0), put the record there (the file arbiter's
// text, with its checksum) and put <Prefix><Pair>/hold/<G> under this
// node's lease; else read both. etcd runs a transaction through raft as
// one step, so of concurrent transactions exactly one finds the key
// absent. A node that finds its own record is told it holds the claim
// only if the hold key is still under its own live lease: a record left
// by an earlier run of the node, or whose lease expired, is refused with
// ErrLeaseExpired (which wraps ErrLost), since this run cannot prove it
// is the live one. The lease is granted ahead (Prepare; Open's
// constructor does it when the pair starts), so the claim itself is one
// round trip to the leader plus one raft commit.
//
// Why the record is not itself under the lease: a lease that expired
// would delete the decision, and the other node could then win the same
// generation while the first still runs on an answer it got earlier. The
// lease instead fences the live node: it renews the lease every third of
// its TTL, and once it has not renewed it for 0.9 TTL (it is cut from the
// etcd majority) Lost is closed and OnLost called: the live node must
// halt without releasing more output. The hold key expires in etcd no
// earlier, so anyone who sees it gone (an operator, a restarter about to
// start the VM elsewhere from its disk) knows the VM runs nowhere. A node
// that is not live yet is not fenced: it takes a new lease at its claim.
//
// What etcd guarantees, and what the arbiter relies on:
//
//   - Transactions and reads are linearizable (reads are, unless
//     serializable is asked for, which the arbiter never does): a member
//     answers only what a majority committed, after confirming with the
//     majority that it is current. A member cut off with a minority
//     cannot commit and cannot confirm: the arbiter gets a timeout, which
//     is ErrUnreachable, and never a win. So a side cut from the etcd
//     majority never goes live, as the file arbiter's side that cannot
//     reach the storage.
//   - Committed writes survive the loss of a minority of members, so a
//     decision outlives a member's crash. etcd must run with fsync (its
//     default, never --unsafe-no-fsync) on disks that honour flushes.
//   - Every answer names its cluster: the arbiter checks it against
//     EtcdConfig.ClusterID, or against the ID all endpoints reported when
//     it connected, and refuses another (ErrWrongCluster, which wraps
//     ErrCorrupt): an endpoint list that mixes clusters, or an endpoint
//     that now belongs to a rebuilt cluster, is an operator's error, not
//     a decision. The check is against mistakes, not attackers: against
//     an endpoint that lies on purpose, use TLS with a CA of the cluster's
//     own.
//
// What etcd does not guarantee, and the arbiter assumes:
//
//   - Lease time is not synchronised time. etcd's leader expires a lease
//     TTL after it last renewed it, on its own clock; the holder counts
//     from before it sent the renewal, on its own clock, and gives up at
//     0.9 TTL. This holds if the two clocks' rates differ by less than
//     10% and a halt completes within the rest: wall-clock steps do not
//     matter (Go's timers are monotonic), only rates. A leader change
//     restarts the lease's count in etcd, which only makes it later.
//   - The lease TTL against the failure detector's timeout: the TTL is
//     how long a live node goes on while cut from etcd, and how soon a
//     restarter may act. Keep it well above etcd's election timeout
//     (etcd grants at least 1.5 times it) and above the pair's heartbeat
//     timeout, so that a leader election or a short blip of the etcd
//     network does not halt a live node: the default 5 s against the
//     default 1 s heartbeat timeout and etcd's default 1 s election.
//     After Advance the node no longer holds the current generation, and
//     a lost lease no longer halts it: its new backup takes over by the
//     pair's own detector if it must.
//   - A claim whose answer was lost may still commit (see duty 3); its
//     retry finds it, under the same lease, and it is a win.
//
// Records written by another version of ftkvm are refused (ErrCorrupt,
// naming the version), as is anything that is not a whole record for
// the pair and generation of its key.
package split
