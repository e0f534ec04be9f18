package main

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
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// loadOrCreateCert returns the configured certificate, or a self-signed
// one kept in the data directory and made on first start (BEHAVIOUR O1).
func loadOrCreateCert(certFile, keyFile, dataDir, domain string, log *slog.Logger) (tls.Certificate, error) {
	if certFile != "" {
		return tls.LoadX509KeyPair(certFile, keyFile)
	}
	certFile = filepath.Join(dataDir, "tls", "cert.pem")
	keyFile = filepath.Join(dataDir, "tls", "key.pem")
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err == nil {
		return cert, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return cert, fmt.Errorf("tls: %w", err)
	}
	certPEM, keyPEM, err := selfSigned(domain)
	if err != nil {
		return cert, err
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return cert, err
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		return cert, err
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		return cert, err
	}
	log.Warn("no certificate configured: generated a self-signed one; clients must be told to trust it or c2s.cert_file set", "cert_file", certFile)
	return tls.X509KeyPair(certPEM, keyPEM)
}

func selfSigned(domain string) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: domain},
		DNSNames:              []string{domain, "*." + domain},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(5, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}
