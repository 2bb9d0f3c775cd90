package logchannel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
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

// noCert is a sender TLS config that passes the sender's own checks but
// presents no certificate: GetClientCertificate returns an empty one.
func noCert(c *tls.Config) *tls.Config {
	c = c.Clone()
	c.Certificates = nil
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	return c
}

// A receiver whose TLS config relies on GetConfigForClient and has no
// ClientCAs is refused as it is built, so a sender without a certificate
// never gets in.
func TestTLSReceiverGetConfigForClientWithoutClientCAs(t *testing.T) {
	ts, _ := newTLSSetup(t)
	base := ts.receiver.TLS
	for name, get := range map[string]func(*tls.ClientHelloInfo) (*tls.Config, error){
		"returns nil": func(*tls.ClientHelloInfo) (*tls.Config, error) { return nil, nil },
		"returns a config without ClientCAs": func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return &tls.Config{Certificates: base.Certificates}, nil
		},
	} {
		t.Run(name, func(t *testing.T) {
			rcfg := ts.receiver
			rcfg.TLS = &tls.Config{Certificates: base.Certificates, GetConfigForClient: get}
			scfg := ts.sender
			scfg.TLS = noCert(scfg.TLS)
			a, b := tcpPair(t)
			s, r, serr, rerr := connect(testCtx(t), a, b, scfg, rcfg)
			if serr == nil || rerr == nil {
				s.Close()
				r.Close()
				t.Fatalf("a sender without a certificate got in: sender %v, receiver %v", serr, rerr)
			}
			wantErr(t, rerr, ErrInvalidConfig)
			t.Logf("receiver: %v\nsender: %v", rerr, serr)
		})
	}
}

// GetConfigForClient is checked when it runs: a config it returns that
// would let a sender in without a verified certificate fails the
// handshake; a sound one works.
func TestTLSReceiverGetConfigForClientReturnsWeakConfig(t *testing.T) {
	ts, ca := newTLSSetup(t)
	base := ts.receiver.TLS
	cases := []struct {
		name string
		cfg  *tls.Config
		ok   bool
	}{
		{"no ClientCAs", &tls.Config{Certificates: base.Certificates}, false},
		{"RequestClientCert", &tls.Config{Certificates: base.Certificates, ClientCAs: ca.pool, ClientAuth: tls.RequestClientCert}, false},
		{"RequireAnyClientCert", &tls.Config{Certificates: base.Certificates, ClientCAs: ca.pool, ClientAuth: tls.RequireAnyClientCert}, false},
		{"VerifyClientCertIfGiven", &tls.Config{Certificates: base.Certificates, ClientCAs: ca.pool, ClientAuth: tls.VerifyClientCertIfGiven}, false},
		{"no certificate", &tls.Config{ClientCAs: ca.pool}, false},
		{"sound", &tls.Config{Certificates: base.Certificates, ClientCAs: ca.pool, ClientAuth: tls.RequireAndVerifyClientCert}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rcfg := ts.receiver
			rcfg.TLS = base.Clone()
			rcfg.TLS.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return c.cfg, nil }
			scfg := ts.sender
			if !c.ok {
				scfg.TLS = noCert(scfg.TLS)
			}
			a, b := tcpPair(t)
			s, r, serr, rerr := connect(testCtx(t), a, b, scfg, rcfg)
			if c.ok {
				if serr != nil || rerr != nil {
					t.Fatalf("sound GetConfigForClient refused: sender %v, receiver %v", serr, rerr)
				}
				s.Close()
				r.Close()
				return
			}
			if serr == nil || rerr == nil {
				s.Close()
				r.Close()
				t.Fatalf("a sender without a certificate got in: sender %v, receiver %v", serr, rerr)
			}
			wantErr(t, rerr, ErrInvalidConfig)
			wantErr(t, serr, ErrAuth)
			t.Logf("receiver: %v\nsender: %v", rerr, serr)
		})
	}
}

// A sender that skips verification is refused, so it cannot connect to a
// receiver whose certificate comes from a rogue CA.
func TestTLSSenderInsecureSkipVerify(t *testing.T) {
	ts, _ := newTLSSetup(t)
	rogue := newTestCA(t, "rogue CA")
	ts.receiver.TLS.Certificates = []tls.Certificate{rogue.issue(t, "backup", true)}
	ts.sender.TLS.InsecureSkipVerify = true
	a, b := tcpPair(t)
	s, r, serr, rerr := connect(testCtx(t), a, b, ts.sender, ts.receiver)
	if serr == nil || rerr == nil {
		s.Close()
		r.Close()
		t.Fatalf("sender with InsecureSkipVerify connected to a rogue receiver: sender %v, receiver %v", serr, rerr)
	}
	wantErr(t, serr, ErrInvalidConfig)
	t.Logf("sender: %v\nreceiver: %v", serr, rerr)
}

// Every other weakening is refused when the Sender or Receiver is built.
func TestTLSWeakConfigsRefused(t *testing.T) {
	ts, _ := newTLSSetup(t)
	cases := []struct {
		name   string
		sender bool
		weaken func(c *tls.Config)
	}{
		{"sender InsecureSkipVerify", true, func(c *tls.Config) { c.InsecureSkipVerify = true }},
		{"sender without RootCAs", true, func(c *tls.Config) { c.RootCAs = nil }},
		{"sender without ServerName", true, func(c *tls.Config) { c.ServerName = "" }},
		{"sender MaxVersion TLS 1.2", true, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }},
		{"receiver without ClientCAs", false, func(c *tls.Config) { c.ClientCAs = nil }},
		{"receiver VerifyPeerCertificate without ClientCAs", false, func(c *tls.Config) {
			c.ClientCAs = nil
			c.VerifyPeerCertificate = func([][]byte, [][]*x509.Certificate) error { return nil }
		}},
		{"receiver GetConfigForClient without ClientCAs", false, func(c *tls.Config) {
			c.ClientCAs = nil
			c.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return nil, nil }
		}},
		{"receiver RequestClientCert", false, func(c *tls.Config) { c.ClientAuth = tls.RequestClientCert }},
		{"receiver RequireAnyClientCert", false, func(c *tls.Config) { c.ClientAuth = tls.RequireAnyClientCert }},
		{"receiver VerifyClientCertIfGiven", false, func(c *tls.Config) { c.ClientAuth = tls.VerifyClientCertIfGiven }},
		{"receiver InsecureSkipVerify", false, func(c *tls.Config) { c.InsecureSkipVerify = true }},
		{"receiver MaxVersion TLS 1.2", false, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			scfg, rcfg := ts.sender, ts.receiver
			scfg.TLS, rcfg.TLS = scfg.TLS.Clone(), rcfg.TLS.Clone()
			if c.sender {
				c.weaken(scfg.TLS)
			} else {
				c.weaken(rcfg.TLS)
			}
			a, b := tcpPair(t)
			s, r, serr, rerr := connect(testCtx(t), a, b, scfg, rcfg)
			if serr == nil && rerr == nil {
				s.Close()
				r.Close()
			}
			if c.sender {
				wantErr(t, serr, ErrInvalidConfig)
				t.Logf("sender: %v", serr)
			} else {
				wantErr(t, rerr, ErrInvalidConfig)
				t.Logf("receiver: %v", rerr)
			}
		})
	}
	// The receiver's ClientAuth may be left zero (the package requires and
	// verifies client certificates) or say so.
	rcfg := ts.receiver
	rcfg.TLS = rcfg.TLS.Clone()
	rcfg.TLS.ClientAuth = tls.RequireAndVerifyClientCert
	a, b := tcpPair(t)
	mustConnect(t, a, b, ts.sender, rcfg)
}

// After the handshake each side requires a verified chain from its peer,
// whatever the config let through: a TLS client that skipped verification
// (which validate refuses, so startTLS is called directly) is stopped
// there.
func TestTLSPeerWithoutVerifiedChain(t *testing.T) {
	ts, _ := newTLSSetup(t)
	rogue := newTestCA(t, "rogue CA")
	ts.receiver.TLS.Certificates = []tls.Certificate{rogue.issue(t, "backup", true)}
	ts.sender.TLS.InsecureSkipVerify = true
	a, b := tcpPair(t)
	ctx := testCtx(t)
	go func() {
		c, err := startTLS(ctx, b, &ts.receiver, false)
		if err == nil {
			io.Copy(io.Discard, c)
		}
		b.Close()
	}()
	c, err := startTLS(ctx, a, &ts.sender, true)
	if err == nil {
		c.Close()
		t.Fatal("the sender accepted a receiver certificate it did not verify")
	}
	wantErr(t, err, ErrAuth)
	t.Logf("sender: %v", err)
}

// checkPeer on both sides: TLS 1.3 and a verified chain, nothing less.
func TestCheckPeer(t *testing.T) {
	ca := newTestCA(t, "ftkvm test CA")
	leaf, _ := x509.ParseCertificate(ca.issue(t, "primary", false).Certificate[0])
	good := tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13,
		PeerCertificates: []*x509.Certificate{leaf}, VerifiedChains: [][]*x509.Certificate{{leaf, ca.cert}}}
	for _, sender := range []bool{true, false} {
		if err := checkPeer(good, sender); err != nil {
			t.Fatalf("sender %v: verified peer refused: %v", sender, err)
		}
		for name, cs := range map[string]tls.ConnectionState{
			"unverified chain":   {HandshakeComplete: true, Version: tls.VersionTLS13, PeerCertificates: good.PeerCertificates},
			"no certificate":     {HandshakeComplete: true, Version: tls.VersionTLS13},
			"TLS 1.2":            {HandshakeComplete: true, Version: tls.VersionTLS12, PeerCertificates: good.PeerCertificates, VerifiedChains: good.VerifiedChains},
			"handshake not done": {Version: tls.VersionTLS13, PeerCertificates: good.PeerCertificates, VerifiedChains: good.VerifiedChains},
		} {
			err := checkPeer(cs, sender)
			wantErr(t, err, ErrAuth)
			t.Logf("sender %v, %s: %v", sender, name, err)
		}
	}
}
