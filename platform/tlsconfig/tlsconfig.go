// Package tlsconfig builds the TLS configurations of Hangar's servers and
// clients from PEM bytes or PEM files.
//
// Servers present a certificate and, when given a client CA, require and
// verify client certificates against it (mutual TLS). Clients verify the
// server against a given CA (or the system roots) and may present a
// certificate of their own. Every configuration requires TLS 1.2 or later.
//
// The *Files variants treat an empty file name as "not used"; when every
// name is empty they return a nil *tls.Config and a nil error, which callers
// take to mean plaintext.
package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// MinVersion is the oldest TLS version any configuration accepts.
const MinVersion = tls.VersionTLS12

// ServerConfig returns a server configuration presenting certPEM/keyPEM.
// When clientCAPEM is non-empty, clients must present a certificate signed
// by one of its CAs (tls.RequireAndVerifyClientCert).
func ServerConfig(certPEM, keyPEM, clientCAPEM []byte) (*tls.Config, error) {
	return serverConfig(certPEM, keyPEM, clientCAPEM, sources{pair: "certificate and key", ca: "client CA"})
}

// ClientConfig returns a client configuration that verifies the server
// against caPEM (the system roots when empty) and the name serverName (the
// dialled host when empty). certPEM and keyPEM, given together or not at
// all, are the client's own certificate for mutual TLS.
func ClientConfig(caPEM, certPEM, keyPEM []byte, serverName string) (*tls.Config, error) {
	return clientConfig(caPEM, certPEM, keyPEM, serverName, sources{pair: "certificate and key", ca: "CA"})
}

// ServerConfigFiles is ServerConfig over PEM files. It returns nil, nil when
// every name is empty (plaintext); a client CA needs a certificate and key.
func ServerConfigFiles(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" && clientCAFile == "" {
		return nil, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, errors.New("server TLS: certificate and key files must be given together")
	}
	certPEM, keyPEM, err := readPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	caPEM, err := readOptional(clientCAFile, "client CA")
	if err != nil {
		return nil, err
	}
	return serverConfig(certPEM, keyPEM, caPEM, sources{
		pair: fmt.Sprintf("certificate file %s and key file %s", certFile, keyFile),
		ca:   "client CA file " + clientCAFile,
	})
}

// ClientConfigFiles is ClientConfig over PEM files. It returns nil, nil when
// every file name is empty (plaintext), whatever serverName is.
func ClientConfigFiles(caFile, certFile, keyFile, serverName string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("client TLS: certificate and key files must be given together")
	}
	caPEM, err := readOptional(caFile, "CA")
	if err != nil {
		return nil, err
	}
	var certPEM, keyPEM []byte
	if certFile != "" {
		if certPEM, keyPEM, err = readPair(certFile, keyFile); err != nil {
			return nil, err
		}
	}
	return clientConfig(caPEM, certPEM, keyPEM, serverName, sources{
		pair: fmt.Sprintf("certificate file %s and key file %s", certFile, keyFile),
		ca:   "CA file " + caFile,
	})
}

// sources names where the PEM came from, for error messages.
type sources struct{ pair, ca string }

func serverConfig(certPEM, keyPEM, caPEM []byte, src sources) (*tls.Config, error) {
	cert, err := keyPair(certPEM, keyPEM, src.pair)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{
		MinVersion:   MinVersion,
		Certificates: []tls.Certificate{cert},
	}
	if len(caPEM) > 0 {
		if conf.ClientCAs, err = certPool(caPEM, src.ca); err != nil {
			return nil, err
		}
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

func clientConfig(caPEM, certPEM, keyPEM []byte, serverName string, src sources) (*tls.Config, error) {
	conf := &tls.Config{
		MinVersion: MinVersion,
		ServerName: serverName,
	}
	var err error
	if len(caPEM) > 0 {
		if conf.RootCAs, err = certPool(caPEM, src.ca); err != nil {
			return nil, err
		}
	}
	if len(certPEM) > 0 || len(keyPEM) > 0 {
		cert, err := keyPair(certPEM, keyPEM, src.pair)
		if err != nil {
			return nil, err
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return conf, nil
}

func keyPair(certPEM, keyPEM []byte, src string) (tls.Certificate, error) {
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return tls.Certificate{}, fmt.Errorf("load %s: certificate and key must be given together, neither empty", src)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load %s: %w", src, err)
	}
	return cert, nil
}

func certPool(caPEM []byte, src string) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("load %s: no PEM certificate found", src)
	}
	return pool, nil
}

func readPair(certFile, keyFile string) (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(certFile); err != nil {
		return nil, nil, fmt.Errorf("read certificate file: %w", err)
	}
	if keyPEM, err = os.ReadFile(keyFile); err != nil {
		return nil, nil, fmt.Errorf("read key file: %w", err)
	}
	return certPEM, keyPEM, nil
}

func readOptional(file, what string) ([]byte, error) {
	if file == "" {
		return nil, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read %s file: %w", what, err)
	}
	return b, nil
}
