package split_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/ftkvm/ftkvm/split"
)

// writeCert makes a key and a certificate signed by parent (self-signed
// if nil) and writes them as PEM files dir/name.pem and dir/name-key.pem.
func writeCert(t *testing.T, dir, name string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.Subject = pkix.Name{CommonName: name}
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, name+".pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(filepath.Join(dir, name+"-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return cert, key
}

// The arbiter speaks TLS to etcd, with a client certificate where etcd
// asks for one; without it, or with another CA, nothing is claimed.
func TestEtcdTLS(t *testing.T) {
	t.Parallel() // mostly waits: for members to stop, for timeouts
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", nil, nil, &x509.Certificate{SerialNumber: big.NewInt(1), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})
	writeCert(t, dir, "server", ca, caKey, &x509.Certificate{SerialNumber: big.NewInt(2), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	writeCert(t, dir, "client", ca, caKey, &x509.Certificate{SerialNumber: big.NewInt(3), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	writeCert(t, dir, "stranger", nil, nil, &x509.Certificate{SerialNumber: big.NewInt(4), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign})

	c := startEtcdCluster(t, 1, "ftkvm-split-tls", "", func(cfg *embed.Config) {
		u := cfg.ListenClientUrls[0]
		u.Scheme = "https"
		cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{u}, []url.URL{u}
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server-key.pem"),
			TrustedCAFile: filepath.Join(dir, "ca.pem"), ClientCertAuth: true,
		}
	})
	hostPort := c.cfgs[0].ListenClientUrls[0].Host
	url := "etcd://" + hostPort
	cfg := split.EtcdConfig{Pair: "tls", Node: "hostA", Timeout: 2 * time.Second,
		CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "client.pem"), KeyFile: filepath.Join(dir, "client-key.pem")}
	newArb, err := split.Open(url, cfg)
	if err != nil {
		t.Fatal(err)
	}
	a, err := newArb(1)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.TestAndSet(context.Background()); err != nil {
		t.Fatal(err)
	}

	noCert := cfg
	noCert.CertFile, noCert.KeyFile, noCert.Timeout = "", "", 500*time.Millisecond
	if _, err := split.Open(url, noCert); !errors.Is(err, split.ErrUnreachable) {
		t.Fatalf("without a client certificate: %v, want ErrUnreachable", err)
	}
	otherCA := noCert
	otherCA.CAFile = filepath.Join(dir, "stranger.pem")
	if _, err := split.Open(url, otherCA); !errors.Is(err, split.ErrUnreachable) {
		t.Fatalf("server checked against another CA: %v, want ErrUnreachable", err)
	}
	plain := noCert
	plain.CAFile = ""
	if _, err := split.Open(url, plain); !errors.Is(err, split.ErrUnreachable) {
		t.Fatalf("plaintext to a TLS endpoint: %v, want ErrUnreachable", err)
	}
}
