package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"pushd/internal/apnstest"
)

// apnsProvider is an in-tree APNS server with the files an operator's
// [apns] section names: the provider key (.p8) whose tokens it verifies,
// and its CA. The benches and the tests point pushd at it this way.
type apnsProvider struct {
	*apnstest.Server
	Key             *ecdsa.PrivateKey
	KeyFile, CAFile string
}

// Provider identity every bench and test uses.
const (
	apnsKeyID  = "KEY1234567"
	apnsTeamID = "TEAM123456"
	apnsTopic  = "com.example.pushd"
)

// newAPNSProvider starts the server with a fresh provider key (opts'
// TokenKey is set to it) and writes the key and CA files into dir.
func newAPNSProvider(dir string, opts apnstest.Options) (*apnsProvider, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	opts.TokenKey = &key.PublicKey
	p := &apnsProvider{Server: apnstest.NewServer(opts), Key: key,
		KeyFile: filepath.Join(dir, "AuthKey.p8"), CAFile: filepath.Join(dir, "apns-ca.pem")}
	err = errors.Join(os.WriteFile(p.KeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600),
		os.WriteFile(p.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.Certificate().Raw}), 0o600))
	if err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// configure points a push config's [apns] at the server.
func (p *apnsProvider) configure(c *pushFileConfig) {
	c.APNS.Endpoint, c.APNS.CAFile, c.APNS.KeyFile = p.URL, p.CAFile, p.KeyFile
	c.APNS.KeyID, c.APNS.TeamID, c.APNS.Topic = apnsKeyID, apnsTeamID, apnsTopic
}

// section is the same as a TOML [apns] section, for a node's config file.
func (p *apnsProvider) section() string {
	return fmt.Sprintf("[apns]\nendpoint = %q\nca_file = %q\nkey_file = %q\nkey_id = %q\nteam_id = %q\ntopic = %q\n",
		p.URL, p.CAFile, p.KeyFile, apnsKeyID, apnsTeamID, apnsTopic)
}
