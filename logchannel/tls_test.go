package logchannel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue makes a leaf certificate for a server (DNS name "backup") or a
// client.
func (ca *testCA) issue(t testing.TB, name string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.DNSNames = []string{name}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

type tlsSetup struct {
	sender, receiver Config
}

func newTLSSetup(t testing.TB) (*tlsSetup, *testCA) {
	ca := newTestCA(t, "ftkvm test CA")
	s := testConfig()
	s.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "primary", false)},
		RootCAs:      ca.pool,
		ServerName:   "backup",
	}
	r := testConfig()
	r.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, "backup", true)},
		ClientCAs:    ca.pool,
	}
	return &tlsSetup{sender: s, receiver: r}, ca
}

func TestTLSStream(t *testing.T) {
	ts, _ := newTLSSetup(t)
	a, b := tcpPair(t)
	stream(t, a, b, ts.sender, ts.receiver, 5000, 100)
}

func TestTLSUnauthenticatedSender(t *testing.T) {
	ts, _ := newTLSSetup(t)
	rogue := newTestCA(t, "rogue CA")
	ts.sender.TLS.Certificates = []tls.Certificate{rogue.issue(t, "intruder", false)}
	a, b := tcpPair(t)
	_, _, serr, rerr := connect(testCtx(t), a, b, ts.sender, ts.receiver)
	wantErr(t, rerr, ErrAuth)
	wantErr(t, serr, ErrAuth)
	t.Logf("receiver: %v\nsender: %v", rerr, serr)
}

func TestTLSSenderWithoutTLS(t *testing.T) {
	ts, _ := newTLSSetup(t)
	a, b := tcpPair(t)
	_, _, serr, rerr := connect(testCtx(t), a, b, testConfig(), ts.receiver)
	wantErr(t, rerr, ErrAuth)
	if serr == nil {
		t.Fatal("plain sender accepted by a TLS receiver")
	}
	t.Logf("receiver: %v\nsender: %v", rerr, serr)
}

func TestTLSUnauthenticatedReceiver(t *testing.T) {
	ts, _ := newTLSSetup(t)
	rogue := newTestCA(t, "rogue CA")
	ts.receiver.TLS.Certificates = []tls.Certificate{rogue.issue(t, "backup", true)}
	a, b := tcpPair(t)
	_, _, serr, rerr := connect(testCtx(t), a, b, ts.sender, ts.receiver)
	wantErr(t, serr, ErrAuth)
	wantErr(t, rerr, ErrAuth)
	t.Logf("sender: %v\nreceiver: %v", serr, rerr)
}

func TestTLSConfigNeedsCertificates(t *testing.T) {
	ts, _ := newTLSSetup(t)
	ts.sender.TLS.Certificates = nil
	a, _ := net.Pipe()
	_, err := NewSender(testCtx(t), a, ts.sender)
	wantErr(t, err, ErrInvalidConfig)
	ts.receiver.TLS.ClientCAs = nil
	_, b := net.Pipe()
	_, err = NewReceiver(testCtx(t), b, ts.receiver)
	wantErr(t, err, ErrInvalidConfig)
}
