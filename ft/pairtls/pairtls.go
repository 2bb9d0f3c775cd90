// Package pairtls makes and loads the certificates an FT pair's log
// channel authenticates with: one certificate authority of the pair's own
// and a certificate for each node, for mutual TLS 1.3.
//
// Generate writes, into one directory:
//
//	ca.pem                       the pair's CA certificate (both nodes need it)
//	primary.pem, primary-key.pem the primary's certificate and key
//	backup.pem, backup-key.pem   the backup's certificate and key
//
// Keys are ECDSA P-256 in PKCS #8 PEM with mode 0600. The CA's private key
// is discarded once the two certificates are signed, so nobody can issue
// a third one under that CA: to replace a node's certificate, generate a
// new set (both nodes need the new files). Copy ca.pem and primary*.pem to
// the primary's host, ca.pem and backup*.pem to the backup's.
//
// Peers verify each other by the CA and by a fixed node name, not by host
// name: the primary (the TLS client, since it sends the log) requires the
// backup's certificate to carry the DNS name BackupName, and the backup
// requires the primary's to carry PrimaryName, so the pair works over any
// address, link-local IPv6 included, and neither node's certificate can
// pose as the other. The certificates also carry the host names and
// addresses given in Options.Hosts, for tools that check them.
package pairtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The node names the certificates carry and the peers check.
const (
	PrimaryName = "ftkvm-primary"
	BackupName  = "ftkvm-backup"
)

// The files in a certificate directory.
const (
	CAFile          = "ca.pem"
	PrimaryCertFile = "primary.pem"
	PrimaryKeyFile  = "primary-key.pem"
	BackupCertFile  = "backup.pem"
	BackupKeyFile   = "backup-key.pem"
)

// Files lists the files Generate writes, in the order it writes them.
var Files = []string{CAFile, PrimaryCertFile, PrimaryKeyFile, BackupCertFile, BackupKeyFile}

// DefaultHosts are the extra names the certificates carry when
// Options.Hosts is empty.
var DefaultHosts = []string{"localhost", "127.0.0.1", "::1"}

// DefaultValidity is how long the certificates are valid by default.
const DefaultValidity = 5 * 365 * 24 * time.Hour

// Options tune Generate.
type Options struct {
	// Hosts are extra DNS names and IP addresses for both node
	// certificates (the node names are always there). Default
	// DefaultHosts.
	Hosts []string
	// Force replaces existing files; without it Generate refuses to
	// overwrite any.
	Force bool
	// Validity of the CA and the node certificates, from an hour ago.
	// Default DefaultValidity.
	Validity time.Duration
}

// ErrExist is returned (wrapped) by Generate when a file it would write
// exists and Options.Force is not set.
var ErrExist = errors.New("pairtls: certificate files exist")

// Generate makes a CA and the two node certificates with their keys in dir
// (created with mode 0700 if missing) and returns the paths it wrote.
func Generate(dir string, o Options) ([]string, error) {
	hosts := o.Hosts
	if len(hosts) == 0 {
		hosts = DefaultHosts
	}
	validity := o.Validity
	if validity <= 0 {
		validity = DefaultValidity
	}
	var dns []string
	var ips []net.IP
	for _, h := range hosts {
		if i := strings.IndexByte(h, '%'); i > 0 && net.ParseIP(h[:i]) != nil {
			h = h[:i] // fe80::1%eth0: a certificate holds no zone
		}
		if ip := net.ParseIP(h); ip != nil {
			ips = append(ips, ip)
		} else if h != "" {
			dns = append(dns, h)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	if !o.Force {
		var existing []string
		for _, f := range Files {
			if _, err := os.Lstat(filepath.Join(dir, f)); err == nil {
				existing = append(existing, f)
			}
		}
		if len(existing) > 0 {
			return nil, fmt.Errorf("%w in %s: %v (refusing to overwrite them; --force replaces them)", ErrExist, dir, existing)
		}
	}

	notBefore := time.Now().Add(-time.Hour).Truncate(time.Second)
	notAfter := notBefore.Add(validity)
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "ftkvm pair CA " + notBefore.Format("2006-01-02T15:04:05Z07:00"), Organization: []string{"ftkvm"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	type node struct {
		name, certFile, keyFile string
		usage                   x509.ExtKeyUsage
	}
	out := map[string][]byte{CAFile: pemBlock("CERTIFICATE", caDER)}
	for _, n := range []node{
		{PrimaryName, PrimaryCertFile, PrimaryKeyFile, x509.ExtKeyUsageClientAuth}, // the TLS client
		{BackupName, BackupCertFile, BackupKeyFile, x509.ExtKeyUsageServerAuth},    // the TLS server
	} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: n.name, Organization: []string{"ftkvm"}},
			NotBefore:    notBefore,
			NotAfter:     notAfter,
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{n.usage},
			DNSNames:     append([]string{n.name}, dns...),
			IPAddresses:  ips,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		kb, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		out[n.certFile] = pemBlock("CERTIFICATE", der)
		out[n.keyFile] = pemBlock("PRIVATE KEY", kb)
	}

	var wrote []string
	for _, f := range Files {
		mode := fs.FileMode(0o644)
		if f == PrimaryKeyFile || f == BackupKeyFile {
			mode = 0o600
		}
		p := filepath.Join(dir, f)
		if err := writeFile(p, out[f], mode, o.Force); err != nil {
			return wrote, err
		}
		wrote = append(wrote, p)
	}
	return wrote, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail
	}
	return n.Add(n, big.NewInt(1))
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// writeFile writes data to path with mode through a temporary file in the
// same directory, so the file never exists with other permissions or half
// written. Without force, an existing path is not replaced (link fails).
func writeFile(path string, data []byte, mode fs.FileMode, force bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".pairtls-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if force {
		return os.Rename(tmp.Name(), path)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%w: %s (refusing to overwrite it; --force replaces it)", ErrExist, path)
		}
		return err
	}
	return nil
}

// Primary loads the primary's TLS configuration from dir: its certificate
// and key, and the CA that must have issued the backup's certificate,
// which must carry BackupName. The primary is the TLS client.
func Primary(dir string) (*tls.Config, error) {
	cert, pool, err := load(dir, PrimaryCertFile, PrimaryKeyFile, PrimaryName, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   BackupName,
	}, nil
}

// Backup loads the backup's TLS configuration from dir: its certificate
// and key, and the CA that must have issued the primary's certificate,
// which must carry PrimaryName. The backup is the TLS server.
func Backup(dir string) (*tls.Config, error) {
	cert, pool, err := load(dir, BackupCertFile, BackupKeyFile, BackupName, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		// After the chain is verified against the pair's CA: the client
		// must be the pair's primary, not a backup's certificate.
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("pairtls: the peer presented no certificate")
			}
			if err := cs.PeerCertificates[0].VerifyHostname(PrimaryName); err != nil {
				return fmt.Errorf("pairtls: the peer's certificate is not the pair's primary's: %w", err)
			}
			return nil
		},
	}, nil
}

// load reads and checks a node's files: the certificate matches the key,
// was issued by the CA for usage, and names the node.
func load(dir, certFile, keyFile, name string, usage x509.ExtKeyUsage) (tls.Certificate, *x509.CertPool, error) {
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("pairtls: the pair's CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return tls.Certificate{}, nil, fmt.Errorf("pairtls: %s holds no PEM certificate", filepath.Join(dir, CAFile))
	}
	keyPath := filepath.Join(dir, keyFile)
	if st, err := os.Stat(keyPath); err == nil && st.Mode().Perm()&0o077 != 0 {
		return tls.Certificate{}, nil, fmt.Errorf("pairtls: the private key %s is accessible to others (mode %#o): chmod 600 it", keyPath, st.Mode().Perm())
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), keyPath)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("pairtls: %s's certificate and key: %w", name, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, nil, err
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: name}); err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("pairtls: %s is not a valid %s certificate from %s: %w", filepath.Join(dir, certFile), name, filepath.Join(dir, CAFile), err)
	}
	return cert, pool, nil
}
