package tlsconfig_test

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/platform/tlsconfig"
	"github.com/hangar-dev/hangar/platform/tlsconfig/testpki"
)

type pki struct {
	ca, otherCA                     *testpki.CA
	serverCert, serverKey           []byte
	clientCert, clientKey           []byte
	foreignClientCert, foreignClKey []byte
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	var p pki
	var err error
	if p.ca, err = testpki.NewCA("hangar test CA"); err != nil {
		t.Fatal(err)
	}
	if p.otherCA, err = testpki.NewCA("someone else's CA"); err != nil {
		t.Fatal(err)
	}
	if p.serverCert, p.serverKey, err = p.ca.Issue("gateway", "127.0.0.1", "gateway.hangar.test"); err != nil {
		t.Fatal(err)
	}
	if p.clientCert, p.clientKey, err = p.ca.Issue("executor-1"); err != nil {
		t.Fatal(err)
	}
	if p.foreignClientCert, p.foreignClKey, err = p.otherCA.Issue("intruder"); err != nil {
		t.Fatal(err)
	}
	return &p
}

// handshake runs a full TLS exchange over loopback: the server sends one
// byte after its handshake, the client reads it. It returns the client's and
// the server's errors.
func handshake(t *testing.T, server, client *tls.Config) (clientErr, serverErr error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if err := c.(*tls.Conn).Handshake(); err != nil {
			done <- err
			return
		}
		_, err = c.Write([]byte{1})
		done <- err
	}()
	d := &net.Dialer{Timeout: 5 * time.Second}
	conn, err := tls.DialWithDialer(d, "tcp", ln.Addr().String(), client)
	if err == nil {
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	return err, <-done
}

func TestHandshake(t *testing.T) {
	p := newPKI(t)
	mtlsServer, err := tlsconfig.ServerConfig(p.serverCert, p.serverKey, p.ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	plainServer, err := tlsconfig.ServerConfig(p.serverCert, p.serverKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := func(ca, cert, key []byte, name string) *tls.Config {
		t.Helper()
		c, err := tlsconfig.ClientConfig(ca, cert, key, name)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	oldClient := client(p.ca.CertPEM(), p.clientCert, p.clientKey, "")
	oldClient.MinVersion, oldClient.MaxVersion = tls.VersionTLS10, tls.VersionTLS11

	tests := []struct {
		name    string
		server  *tls.Config
		client  *tls.Config
		wantErr []string // any of these substrings; nil means success
	}{
		{"mutual TLS", mtlsServer, client(p.ca.CertPEM(), p.clientCert, p.clientKey, ""), nil},
		{"mutual TLS by DNS name", mtlsServer,
			client(p.ca.CertPEM(), p.clientCert, p.clientKey, "gateway.hangar.test"), nil},
		{"server-only TLS", plainServer, client(p.ca.CertPEM(), nil, nil, ""), nil},
		{"client without certificate", mtlsServer, client(p.ca.CertPEM(), nil, nil, ""),
			[]string{"certificate required"}},
		{"client certificate from another CA", mtlsServer,
			client(p.ca.CertPEM(), p.foreignClientCert, p.foreignClKey, ""),
			[]string{"certificate required", "unknown authority"}},
		{"server from another CA", plainServer, client(p.otherCA.CertPEM(), nil, nil, ""),
			[]string{"unknown authority"}},
		{"wrong server name", plainServer, client(p.ca.CertPEM(), nil, nil, "policy.hangar.test"),
			[]string{"not valid for", "certificate is valid for"}},
		{"TLS 1.1 refused", mtlsServer, oldClient, []string{"protocol version"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cerr, serr := handshake(t, tt.server, tt.client)
			if tt.wantErr == nil {
				if cerr != nil || serr != nil {
					t.Fatalf("handshake failed: client %v, server %v", cerr, serr)
				}
				return
			}
			if cerr == nil || serr == nil {
				t.Fatalf("handshake succeeded or half-failed: client %v, server %v", cerr, serr)
			}
			both := cerr.Error() + " | " + serr.Error()
			for _, w := range tt.wantErr {
				if strings.Contains(both, w) {
					return
				}
			}
			t.Errorf("errors %q contain none of %q", both, tt.wantErr)
		})
	}
}

func TestServerConfigRequiresClientCertsOnlyWithCA(t *testing.T) {
	p := newPKI(t)
	c, err := tlsconfig.ServerConfig(p.serverCert, p.serverKey, p.ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientAuth != tls.RequireAndVerifyClientCert || c.MinVersion != tls.VersionTLS12 {
		t.Errorf("ClientAuth = %v, MinVersion = %x", c.ClientAuth, c.MinVersion)
	}
	c, err = tlsconfig.ServerConfig(p.serverCert, p.serverKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.ClientAuth != tls.NoClientCert {
		t.Errorf("ClientAuth = %v without a client CA", c.ClientAuth)
	}
}

func TestConfigErrors(t *testing.T) {
	p := newPKI(t)
	tests := []struct {
		name    string
		build   func() (*tls.Config, error)
		wantErr string
	}{
		{"server without key", func() (*tls.Config, error) {
			return tlsconfig.ServerConfig(p.serverCert, nil, nil)
		}, "certificate and key must be given together"},
		{"server key mismatch", func() (*tls.Config, error) {
			return tlsconfig.ServerConfig(p.serverCert, p.clientKey, nil)
		}, "load certificate and key: tls: private key does not match public key"},
		{"server bad client CA", func() (*tls.Config, error) {
			return tlsconfig.ServerConfig(p.serverCert, p.serverKey, []byte("junk"))
		}, "load client CA: no PEM certificate found"},
		{"client bad CA", func() (*tls.Config, error) {
			return tlsconfig.ClientConfig([]byte("junk"), nil, nil, "")
		}, "load CA: no PEM certificate found"},
		{"client cert without key", func() (*tls.Config, error) {
			return tlsconfig.ClientConfig(p.ca.CertPEM(), p.clientCert, nil, "")
		}, "certificate and key must be given together"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.build()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if c != nil {
				t.Errorf("config = %v with error", c)
			}
		})
	}
}

func TestFiles(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ca := write("ca.pem", p.ca.CertPEM())
	srvCert, srvKey := write("server.pem", p.serverCert), write("server-key.pem", p.serverKey)
	clCert, clKey := write("client.pem", p.clientCert), write("client-key.pem", p.clientKey)
	junk := write("junk.pem", []byte("not PEM"))
	missing := filepath.Join(dir, "missing.pem")

	t.Run("all empty means plaintext", func(t *testing.T) {
		s, err := tlsconfig.ServerConfigFiles("", "", "")
		if s != nil || err != nil {
			t.Errorf("ServerConfigFiles = %v, %v", s, err)
		}
		c, err := tlsconfig.ClientConfigFiles("", "", "", "gateway")
		if c != nil || err != nil {
			t.Errorf("ClientConfigFiles = %v, %v", c, err)
		}
	})

	t.Run("handshake from files", func(t *testing.T) {
		s, err := tlsconfig.ServerConfigFiles(srvCert, srvKey, ca)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tlsconfig.ClientConfigFiles(ca, clCert, clKey, "")
		if err != nil {
			t.Fatal(err)
		}
		if cerr, serr := handshake(t, s, c); cerr != nil || serr != nil {
			t.Fatalf("handshake: client %v, server %v", cerr, serr)
		}
	})

	errTests := []struct {
		name  string
		build func() (*tls.Config, error)
		want  []string
	}{
		{"server missing cert file", func() (*tls.Config, error) {
			return tlsconfig.ServerConfigFiles(missing, srvKey, "")
		}, []string{"read certificate file", missing}},
		{"server missing key file", func() (*tls.Config, error) {
			return tlsconfig.ServerConfigFiles(srvCert, missing, "")
		}, []string{"read key file", missing}},
		{"server CA without cert", func() (*tls.Config, error) {
			return tlsconfig.ServerConfigFiles("", "", ca)
		}, []string{"certificate and key files must be given together"}},
		{"server junk client CA", func() (*tls.Config, error) {
			return tlsconfig.ServerConfigFiles(srvCert, srvKey, junk)
		}, []string{"client CA file " + junk, "no PEM certificate"}},
		{"server junk key", func() (*tls.Config, error) {
			return tlsconfig.ServerConfigFiles(srvCert, junk, "")
		}, []string{srvCert, junk}},
		{"client missing CA", func() (*tls.Config, error) {
			return tlsconfig.ClientConfigFiles(missing, "", "", "")
		}, []string{"read CA file", missing}},
		{"client junk CA", func() (*tls.Config, error) {
			return tlsconfig.ClientConfigFiles(junk, "", "", "")
		}, []string{"CA file " + junk}},
		{"client cert without key", func() (*tls.Config, error) {
			return tlsconfig.ClientConfigFiles(ca, clCert, "", "")
		}, []string{"certificate and key files must be given together"}},
	}
	for _, tt := range errTests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.build()
			if err == nil {
				t.Fatalf("config = %v, want error", c)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, want it to contain %q", err, w)
				}
			}
			if tt.name == "server missing cert file" && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("err = %v, want it to wrap os.ErrNotExist", err)
			}
		})
	}
}
