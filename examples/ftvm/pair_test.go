package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ftkvm/ftkvm/ft/pairtls"
)

// Without certificates and without --insecure neither side starts, and
// the error says how to make them; these checks come before the guest is
// built, so no KVM is needed.
func TestPairNeedsCertificates(t *testing.T) {
	empty := t.TempDir()
	for _, args := range [][]string{
		{"primary", "--listen", "127.0.0.1:0", "--split-dir", t.TempDir(), "--tls-dir", empty, "--bare", "hello"},
		{"backup", "--connect", "127.0.0.1:1", "--split-dir", t.TempDir(), "--tls-dir", empty, "--bare", "hello"},
	} {
		cmd := cmdPrimary
		if args[0] == "backup" {
			cmd = cmdBackup
		}
		code, err := cmd(context.Background(), args[1:])
		t.Logf("%s: %v", args[0], err)
		if code == 0 || err == nil || !strings.Contains(err.Error(), "ftvm certs "+empty) || !strings.Contains(err.Error(), "--insecure") {
			t.Errorf("%s without certificates: exit %d, %v", args[0], code, err)
		}
	}
	code, err := cmdPrimary(context.Background(), []string{"--listen", "127.0.0.1:0", "--split-dir", t.TempDir(), "--tls-dir", empty, "--insecure", "--bare", "hello"})
	var ue usageError
	if code == 0 || !errors.As(err, &ue) {
		t.Errorf("--insecure with --tls-dir: exit %d, %v; want a usage error", code, err)
	}
}

func TestCertsCommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if code, err := cmdCerts([]string{dir, "--host", "node-a,192.0.2.1"}); code != 0 || err != nil {
		t.Fatalf("ftvm certs: exit %d, %v", code, err)
	}
	if _, err := pairtls.Primary(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := pairtls.Backup(dir); err != nil {
		t.Fatal(err)
	}
	if code, err := cmdCerts([]string{dir}); code == 0 || !errors.Is(err, pairtls.ErrExist) {
		t.Fatalf("ftvm certs over existing files: exit %d, %v", code, err)
	}
	if code, err := cmdCerts([]string{"--force", dir}); code != 0 || err != nil {
		t.Fatalf("ftvm certs --force: exit %d, %v", code, err)
	}
	if code, _ := cmdCerts(nil); code != 2 {
		t.Fatalf("ftvm certs without a directory: exit %d, want 2", code)
	}
	if st, err := os.Stat(filepath.Join(dir, pairtls.PrimaryKeyFile)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("primary key: %v %v", st, err)
	}
}
