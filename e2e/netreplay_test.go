package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/internal/fttest"
	"github.com/ftkvm/ftkvm/internal/guestcheck"
)

// recordLines is how many lines the recorded echo exchange carries: enough
// for hundreds of receive batches and transmitted frames, few enough that
// the recording (which pays a landmark per delivery between exits) stays
// short in an emulated host.
const recordLines = 1000

// TestLinuxRecordReplayNet records the example guest's TCP echo server
// while a client on this host exchanges recordLines lines with it through a
// tap (every reply checked: guestcheck.EchoCheck), then replays the log
// with the NIC configured the same way. The replay must reach the recorded
// fingerprint without touching the tap: its received frames come from the
// log and its transmitted ones go nowhere. The tap's carrier (on while a
// process is attached) and its count of frames from the VM's side show
// that: both move during the recording, neither during the replay. The log
// must hold the NIC's traffic: received batches carrying at least the
// bytes the client sent, and transmitted frames carrying at least the
// bytes echoed back.
func TestLinuxRecordReplayNet(t *testing.T) {
	dir := guestDir(t)
	bin := buildFtvm(t)
	if os.Geteuid() != 0 {
		t.Skip("needs root for the tap")
	}
	makeTap(t, tcpTap)
	logFile := filepath.Join(t.TempDir(), "net.log")
	// A disk too, which the guest's kernel reads as it probes it (the
	// partition table): the recording carries both kinds of DMA.
	img := filepath.Join(t.TempDir(), "disk.img")
	newImage(t, img)
	nic := []string{"--guest-dir", dir, "--work", "net", "--net", "tap:" + tcpTap, "--guest-ip", guestIP, "--disk", img, "--disk-mode", "nonshared"}

	start := time.Now()
	rxBefore := tapCounter(t, tcpTap, "rx_packets")
	w := watchCarrier(t, tcpTap)
	rec := startSide(t, bin, "record", append([]string{"-o", logFile}, nic...)...)
	// The boot is most of the run, and under recording on a loaded
	// emulated host it has taken from 20 s to over 2 minutes.
	conn := dialEcho(t, rec, 5*time.Minute)
	booted := time.Since(start)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	st, err := guestcheck.EchoCheck(ctx, conn, recordLines, 32, nil)
	conn.Close()
	if err != nil {
		t.Fatalf("the recorded echo exchange: %v\n%s", err, fttest.Tail(rec.stderr.String(), 10))
	}
	if err := rec.wait(t, 2*time.Minute); err != nil {
		t.Fatalf("ftvm record: %v\n%s\n%s", err, fttest.Tail(rec.stdout.String(), 10), fttest.Tail(rec.stderr.String(), 10))
	}
	recAttached := w.stop()
	rxRecorded := tapCounter(t, tcpTap, "rx_packets") - rxBefore
	recOut := rec.stdout.String()
	t.Logf("recorded: the guest listened after %v, %d lines echoed in %v (longest round trip %v), the run took %v",
		booted.Round(time.Millisecond), st.Lines, st.Duration.Round(time.Millisecond), st.MaxRTT.Round(time.Millisecond),
		time.Since(start).Round(time.Millisecond))
	if !strings.Contains(recOut, guestcheck.MarkerEchoDone) {
		t.Fatalf("the guest did not see the connection end\n%s", fttest.Tail(recOut, 10))
	}
	// The controls: a process attached to the tap shows in both.
	if !recAttached || rxRecorded == 0 {
		t.Fatalf("the tap did not show the recording's use of it (carrier seen on: %v, %d frames from the VM): the replay's check below would prove nothing",
			recAttached, rxRecorded)
	}

	start = time.Now()
	rxBefore = tapCounter(t, tcpTap, "rx_packets")
	w = watchCarrier(t, tcpTap)
	cmd := exec.CommandContext(ctx, bin, append([]string{"replay", logFile}, nic...)...)
	var repOut, repErr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &repOut, &repErr
	err = cmd.Run()
	repAttached := w.stop()
	rxReplayed := tapCounter(t, tcpTap, "rx_packets") - rxBefore
	t.Logf("replayed in %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("ftvm replay: %v\n%s", err, fttest.Tail(repErr.String(), 15))
	}
	if want, got := lastLine(recOut), lastLine(repOut.String()); !strings.HasPrefix(want, "fingerprint ") || want != got {
		t.Fatalf("record ended with %q, replay with %q\n%s", want, got, fttest.Tail(repErr.String(), 10))
	}
	if !strings.Contains(repErr.String(), "replay reached the recorded end state") {
		t.Errorf("replay did not report reaching the end state:\n%s", fttest.Tail(repErr.String(), 10))
	}
	if repAttached || rxReplayed != 0 {
		t.Errorf("the replay touched the tap: carrier seen on: %v, %d frames from the VM", repAttached, rxReplayed)
	}

	out, err := exec.CommandContext(ctx, bin, "inspect", logFile).CombinedOutput()
	if err != nil {
		t.Fatalf("ftvm inspect: %v\n%s", err, out)
	}
	rx, tx, err := devTraffic(string(out), "virtio-net")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	reads, _, err := devTraffic(string(out), "virtio-blk")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if reads.n == 0 || reads.bytes == 0 {
		t.Errorf("the log holds no disk reads with data (%d, %d bytes): the recording does not carry disk traffic", reads.n, reads.bytes)
	}
	t.Logf("the log holds %d received batches (%d bytes) and %d transmitted frames (%d bytes), and %d disk reads with data (%d bytes); the client sent %d bytes",
		rx.n, rx.bytes, tx.n, tx.bytes, reads.n, reads.bytes, st.Bytes)
	if rx.n == 0 || rx.bytes < st.Bytes {
		t.Errorf("the log's received frames carry %d bytes in %d batches; the client alone sent %d", rx.bytes, rx.n, st.Bytes)
	}
	if tx.n == 0 || tx.bytes < st.Bytes {
		t.Errorf("the log's transmitted frames carry %d bytes in %d; the guest echoed %d", tx.bytes, tx.n, st.Bytes)
	}
}

type traffic struct {
	n     int
	bytes int64
}

// devTraffic reads a device's line of `ftvm inspect` (kind "virtio-net"
// or "virtio-blk"): the completions carrying data (receive batches, disk
// reads) and the writes submitted (frames sent, disk writes).
func devTraffic(inspect, kind string) (rx, tx traffic, err error) {
	for _, line := range strings.Split(inspect, "\n") {
		// "dma        device 0 (virtio-net@0xd0020000): ..."
		_, rest, ok := strings.Cut(line, "): ")
		if !ok || !strings.HasPrefix(line, "dma ") || !strings.Contains(line, " ("+kind+"@") {
			continue
		}
		var completions, errs int
		_, err := fmt.Sscanf(rest, "%d completions, %d carrying %d bytes, %d errors; %d writes submitted, %d bytes",
			&completions, &rx.n, &rx.bytes, &errs, &tx.n, &tx.bytes)
		if err != nil {
			return rx, tx, fmt.Errorf("ftvm inspect's %s line %q: %v", kind, line, err)
		}
		return rx, tx, nil
	}
	return rx, tx, fmt.Errorf("ftvm inspect shows no %s transfers", kind)
}

// tapCounter reads one of the interface's statistics: rx_packets counts
// the frames the host received on the tap, i.e. those its attached process
// (the VM's side) wrote.
func tapCounter(t *testing.T, name, stat string) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/sys/class/net", name, "statistics", stat))
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		t.Fatalf("%s of %s: %v", stat, name, err)
	}
	return n
}

// carrierWatch samples a tap's carrier, which is on exactly while a
// process is attached to the tap.
type carrierWatch struct {
	seen atomic.Bool
	quit chan struct{}
	done chan struct{}
}

func watchCarrier(t *testing.T, name string) *carrierWatch {
	t.Helper()
	path := filepath.Join("/sys/class/net", name, "carrier")
	if b, err := os.ReadFile(path); err != nil || strings.TrimSpace(string(b)) != "0" {
		t.Fatalf("%s before the run: %q, %v; want 0 (no process attached)", path, b, err)
	}
	w := &carrierWatch{quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == "1" {
				w.seen.Store(true)
			}
			select {
			case <-w.quit:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { w.stop() })
	return w
}

// stop ends the sampling and says whether the carrier was ever on.
func (w *carrierWatch) stop() bool {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.done
	return w.seen.Load()
}
