package link

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"
)

// ErrPermanent wraps a connection error that retrying cannot cure: the
// broker's certificate is not trusted, has expired or does not name the
// broker, or the broker refused this gateway's certificate (expired, unknown
// authority, bad certificate). The link stops retrying and reports it.
var ErrPermanent = errors.New("permanent TLS error")

// remoteAlerts are the TLS alerts a broker sends when it refuses the client's
// certificate for good.
var remoteAlerts = []string{
	"remote error: tls: expired certificate",
	"remote error: tls: bad certificate",
	"remote error: tls: unknown certificate authority",
	"remote error: tls: certificate revoked",
	"remote error: tls: unsupported certificate",
	"remote error: tls: certificate required",
	"remote error: tls: access denied",
}

// classify returns err wrapped with ErrPermanent and the reason when it is a
// permanent TLS error, else nil.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	switch {
	case errors.As(err, &unknown):
		return fmt.Errorf("%w: the broker's certificate is not signed by the CA in the pool token: %v", ErrPermanent, err)
	case errors.As(err, &invalid):
		return fmt.Errorf("%w: the broker's certificate is not valid: %v", ErrPermanent, err)
	case errors.As(err, &host):
		return fmt.Errorf("%w: the broker's certificate does not name the broker address of the pool token: %v", ErrPermanent, err)
	}
	msg := err.Error()
	for _, a := range remoteAlerts {
		if strings.Contains(msg, a) {
			return fmt.Errorf("%w: the broker refused this pool's certificate (%s): check its validity with `openssl x509 -noout -dates` and that it was issued by the control plane's CA", ErrPermanent, strings.TrimPrefix(a, "remote error: tls: "))
		}
	}
	return nil
}

// watchedConn reports permanent TLS errors met while reading (TLS 1.3: the
// broker's verdict on the client certificate arrives after the handshake).
type watchedConn struct {
	net.Conn
	fatal func(error)
}

func (c *watchedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if perr := classify(err); perr != nil {
		c.fatal(perr)
	}
	return n, err
}

// dialer returns the MQTT client's connection function: TCP, TLS (errors
// classified), then the packet limiter.
func (l *Link) dialer(tlsConf *tls.Config, limit int, marker []byte) func(*url.URL, time.Duration) (net.Conn, error) {
	return func(u *url.URL, timeout time.Duration) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		conf := tlsConf.Clone()
		if conf.ServerName == "" {
			conf.ServerName = u.Hostname()
		}
		d := &tls.Dialer{NetDialer: &net.Dialer{}, Config: conf}
		c, err := d.DialContext(ctx, "tcp", u.Host)
		if err != nil {
			if perr := classify(err); perr != nil {
				l.fail(perr)
				return nil, perr
			}
			return nil, err
		}
		var conn net.Conn = &watchedConn{Conn: c, fatal: l.fail}
		if limit > 0 {
			conn = newPacketLimiter(conn, limit, marker)
		}
		return conn, nil
	}
}
