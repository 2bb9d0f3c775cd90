package pairtls_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ftkvm/ftkvm/ft/pairtls"
	"github.com/ftkvm/ftkvm/logchannel"
)

func generate(t *testing.T, o pairtls.Options) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "certs")
	files, err := pairtls.Generate(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(pairtls.Files) {
		t.Fatalf("wrote %v", files)
	}
	return dir
}

func TestGenerateFiles(t *testing.T) {
	dir := generate(t, pairtls.Options{})
	for _, f := range pairtls.Files {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o644)
		if f == pairtls.PrimaryKeyFile || f == pairtls.BackupKeyFile {
			want = 0o600
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", f, st.Mode().Perm(), want)
		}
	}
	if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != len(pairtls.Files) {
		t.Errorf("%d entries in the directory, want %d (no CA key, no temporary files)", len(ents), len(pairtls.Files))
	}
	b, _ := os.ReadFile(filepath.Join(dir, pairtls.PrimaryCertFile))
	blk, _ := pem.Decode(b)
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.DNSNames) != 2 || c.DNSNames[0] != pairtls.PrimaryName || c.DNSNames[1] != "localhost" || len(c.IPAddresses) != 2 {
		t.Errorf("primary SANs %v %v, want %s, localhost, 127.0.0.1, ::1", c.DNSNames, c.IPAddresses, pairtls.PrimaryName)
	}

	// No overwrite without Force, and nothing written.
	before, _ := os.ReadFile(filepath.Join(dir, pairtls.CAFile))
	if _, err := pairtls.Generate(dir, pairtls.Options{}); !errors.Is(err, pairtls.ErrExist) {
		t.Fatalf("second Generate: %v, want ErrExist", err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, pairtls.CAFile)); string(after) != string(before) {
		t.Fatal("the CA was overwritten without Force")
	}
	if _, err := pairtls.Generate(dir, pairtls.Options{Force: true, Hosts: []string{"node-a.example", "fe80::1"}}); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(filepath.Join(dir, pairtls.CAFile)); string(after) == string(before) {
		t.Fatal("Force did not replace the CA")
	}
	if _, err := pairtls.Primary(dir); err != nil {
		t.Fatal(err)
	}
}

func TestLoadChecks(t *testing.T) {
	dir := generate(t, pairtls.Options{})
	other := generate(t, pairtls.Options{})
	if _, err := pairtls.Primary(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := pairtls.Backup(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := pairtls.Primary(t.TempDir()); err == nil {
		t.Fatal("loaded from an empty directory")
	}
	// A CA from another pair.
	mixed := t.TempDir()
	copyFile(t, filepath.Join(other, pairtls.CAFile), filepath.Join(mixed, pairtls.CAFile), 0o644)
	for _, f := range []string{pairtls.PrimaryCertFile, pairtls.PrimaryKeyFile} {
		copyFile(t, filepath.Join(dir, f), filepath.Join(mixed, f), 0o600)
	}
	_, err := pairtls.Primary(mixed)
	t.Logf("foreign CA: %v", err)
	if err == nil {
		t.Fatal("loaded a certificate another CA issued")
	}
	// Swapped roles: the backup's files in the primary's place.
	swapped := t.TempDir()
	copyFile(t, filepath.Join(dir, pairtls.CAFile), filepath.Join(swapped, pairtls.CAFile), 0o644)
	copyFile(t, filepath.Join(dir, pairtls.BackupCertFile), filepath.Join(swapped, pairtls.PrimaryCertFile), 0o644)
	copyFile(t, filepath.Join(dir, pairtls.BackupKeyFile), filepath.Join(swapped, pairtls.PrimaryKeyFile), 0o600)
	_, err = pairtls.Primary(swapped)
	t.Logf("swapped: %v", err)
	if err == nil {
		t.Fatal("loaded the backup's certificate as the primary's")
	}
	// A key others can read.
	os.Chmod(filepath.Join(dir, pairtls.BackupKeyFile), 0o644)
	_, err = pairtls.Backup(dir)
	t.Logf("mode 0644 key: %v", err)
	if err == nil {
		t.Fatal("loaded a key readable by others")
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

// connect runs a logchannel handshake between a sender (the primary) and
// a receiver (the backup) with the given TLS configs.
func connect(t *testing.T, primary, backup *tls.Config) (serr, rerr error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cfg := logchannel.Config{ConfigHash: [32]byte{1}}
	rc := make(chan error, 1)
	go func() {
		c, err := net.Dial("tcp", l.Addr().String()) // the backup dials, as in ft
		if err != nil {
			rc <- err
			return
		}
		bc := cfg
		bc.TLS = backup
		r, err := logchannel.NewReceiver(ctx, c, bc)
		if err == nil {
			r.Close()
		}
		rc <- err
	}()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	pc := cfg
	pc.TLS = primary
	s, serr := logchannel.NewSender(ctx, c, pc)
	if serr == nil {
		s.Close()
	}
	return serr, <-rc
}

func TestPairConnects(t *testing.T) {
	dir := generate(t, pairtls.Options{})
	p, _ := pairtls.Primary(dir)
	b, _ := pairtls.Backup(dir)
	if serr, rerr := connect(t, p, b); serr != nil || rerr != nil {
		t.Fatalf("primary %v, backup %v", serr, rerr)
	}
}

func TestForeignNodesRefused(t *testing.T) {
	dir := generate(t, pairtls.Options{})
	rogue := generate(t, pairtls.Options{})
	p, _ := pairtls.Primary(dir)
	b, _ := pairtls.Backup(dir)
	rp, _ := pairtls.Primary(rogue)
	rb, _ := pairtls.Backup(rogue)
	if rp == nil || rb == nil || p == nil || b == nil {
		t.Fatal("load failed")
	}
	serr, rerr := connect(t, p, rb)
	t.Logf("backup from another pair: primary %v; backup %v", serr, rerr)
	if !errors.Is(serr, logchannel.ErrAuth) || rerr == nil {
		t.Fatalf("a backup from another pair was accepted: primary %v, backup %v", serr, rerr)
	}
	// A primary from another pair that trusts this pair's CA: the backup
	// refuses its certificate.
	fake := p.Clone()
	fake.Certificates = rp.Certificates
	serr, rerr = connect(t, fake, b)
	t.Logf("primary from another pair: primary %v; backup %v", serr, rerr)
	if !errors.Is(rerr, logchannel.ErrAuth) || serr == nil {
		t.Fatalf("a primary from another pair was accepted: primary %v, backup %v", serr, rerr)
	}
	// The primary's own certificate cannot serve as a backup's: a server
	// presenting it fails the primary's check of the node name.
	fake = b.Clone()
	fake.Certificates = p.Certificates
	serr, rerr = connect(t, p, fake)
	t.Logf("primary's certificate as the backup's: primary %v; backup %v", serr, rerr)
	if !errors.Is(serr, logchannel.ErrAuth) {
		t.Fatalf("the primary accepted its own certificate from the backup: %v", serr)
	}
	// Nor the backup's a primary's.
	fake = p.Clone()
	fake.Certificates = b.Certificates
	serr, rerr = connect(t, fake, b)
	t.Logf("backup's certificate as the primary's: primary %v; backup %v", serr, rerr)
	if !errors.Is(rerr, logchannel.ErrAuth) {
		t.Fatalf("the backup accepted its own certificate from the primary: %v", rerr)
	}
}
