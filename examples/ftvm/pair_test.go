package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/ftkvm/ftkvm/ft/ftmetrics"
	"github.com/ftkvm/ftkvm/ft/pairtls"
	"github.com/ftkvm/ftkvm/split"
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

// The pair's flags that contradict or lack each other are usage errors,
// refused before the guest is built.
func TestPairFlagContract(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--insecure", "--bare", "hello"}, "--split-dir is required"},
		{[]string{"--insecure", "--split-dir", dir, "--arbiter", "etcd://127.0.0.1:1", "--bare", "hello"}, "contradict"},
		{[]string{"--insecure", "--split-dir", dir, "--etcd-ca", "ca.pem", "--bare", "hello"}, "go with --arbiter"},
		{[]string{"--insecure", "--arbiter", "http://127.0.0.1:2379", "--bare", "hello"}, "--arbiter"},
		{[]string{"--insecure", "--split-dir", dir, "--log-format", "xml", "--bare", "hello"}, "--log-format"},
	} {
		for _, side := range []struct {
			cmd  func(context.Context, []string) (int, error)
			args []string
		}{{cmdPrimary, []string{"--listen", "127.0.0.1:0"}}, {cmdBackup, []string{"--connect", "127.0.0.1:1"}}} {
			args := append(side.args[:len(side.args):len(side.args)], c.args...)
			code, err := side.cmd(context.Background(), args)
			var ue usageError
			if code != exitUsage || !errors.As(err, &ue) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v: exit %d, %v; want a usage error about %q", args, code, err, c.want)
			}
		}
	}
}

// --log-format json gives ft a JSON handler; text leaves ft its own text
// handler on stderr.
func TestPairLogFormat(t *testing.T) {
	var b strings.Builder
	o := pairOptions{logFormat: "json"}
	l, err := o.logger(&b)
	if err != nil || l == nil {
		t.Fatalf("json: %v %v", l, err)
	}
	l.Warn("PRIMARY LOST: x", "state", "draining")
	var rec map[string]any
	if err := json.Unmarshal([]byte(b.String()), &rec); err != nil || rec["level"] != "WARN" || rec["msg"] != "PRIMARY LOST: x" || rec["state"] != "draining" || rec["time"] == nil {
		t.Fatalf("json record %q: %v", b.String(), err)
	}
	// Lines written for the log (the live side's announcement) become
	// records too.
	b.Reset()
	recordWriter{l}.Write([]byte("ftvm: announced 10.0.2.15\nsecond\n"))
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"msg":"ftvm: announced 10.0.2.15"`) || !strings.Contains(lines[1], `"msg":"second"`) {
		t.Fatalf("records %q", b.String())
	}
	o.logFormat = "text"
	if l, err := o.logger(&b); l != nil || err != nil {
		t.Fatalf("text: %v %v", l, err)
	}
}

// --metrics-addr serves the side's Monitor: /status answers 503 until the
// side reports, /metrics the process's metrics; a taken port is an error.
func TestPairServeMetrics(t *testing.T) {
	o := pairOptions{metricsAddr: "127.0.0.1:0"}
	stop, addr, err := o.serveMetrics("backup", new(ft.Monitor))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/status")
	if err != nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/status before any report: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get("http://" + addr + "/metrics")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/metrics: %v %v", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "go_goroutines") {
		t.Fatalf("/metrics:\n%s", body)
	}
	if _, err := ftmetrics.Fetch(context.Background(), addr); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("ftvm status before any report: %v", err)
	}
	o2 := pairOptions{metricsAddr: addr}
	if _, _, err := o2.serveMetrics("backup", new(ft.Monitor)); err == nil {
		t.Fatal("a second server on the same port")
	}
	if stop, addr, err := (&pairOptions{}).serveMetrics("backup", nil); err != nil || addr != "" {
		t.Fatalf("no --metrics-addr: %q %v", addr, err)
	} else {
		stop()
	}
}

// --arbiter etcd://... opens the cluster with the pair's name, the node's
// name as ft names it by default (or --node), and the TLS files.
func TestPairEtcdArbiter(t *testing.T) {
	var got split.EtcdConfig
	var url string
	defer func(f func(string, split.EtcdConfig) (func(uint64) (split.Arbiter, error), error)) { openEtcd = f }(openEtcd)
	openEtcd = func(u string, c split.EtcdConfig) (func(uint64) (split.Arbiter, error), error) {
		url, got = u, c
		if c.Pair == "refuse" {
			return nil, split.ErrUnreachable
		}
		return func(uint64) (split.Arbiter, error) { return nil, nil }, nil
	}
	o := pairOptions{arbiter: "etcd://e1:2379,e2:2379", pair: "vm1", etcdCA: "ca.pem", etcdCert: "c.pem", etcdKey: "k.pem"}
	if f, err := o.etcdArbiter("backup"); err != nil || f == nil {
		t.Fatal(err)
	}
	if url != o.arbiter || got.Pair != "vm1" || got.Node != ft.DefaultNode("backup") || !strings.HasPrefix(got.Node, "backup@") ||
		got.CAFile != "ca.pem" || got.CertFile != "c.pem" || got.KeyFile != "k.pem" {
		t.Errorf("opened %q with %+v", url, got)
	}
	o.node = "b1"
	o.etcdArbiter("backup")
	if got.Node != "b1" {
		t.Errorf("--node b1: node %q", got.Node)
	}
	o.pair = "refuse"
	if _, err := o.etcdArbiter("primary"); !errors.Is(err, split.ErrUnreachable) || !strings.Contains(err.Error(), "--arbiter etcd://e1:2379,e2:2379") {
		t.Errorf("an unreachable cluster: %v", err)
	}
}
