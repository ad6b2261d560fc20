// Package mosquitto writes a Mosquitto 2.0 configuration that applies Hangar's
// broker rules (the same as the embedded broker of package broker), and runs
// Mosquitto for tests and development.
//
// The configuration has one listener that requires a client certificate from the
// control plane's CA (require_certificate true) and takes the certificate's CN as
// the username (use_identity_as_username true), so that clients are authenticated
// by certificate only: allow_anonymous false refuses any connection without one,
// and MQTT usernames and passwords are ignored. The ACL file lets the control
// plane (CN "hangar-control-plane") read and write hangar/#, and a pool
// (CN = pool id) read only hangar/pools/{id}/runs and hangar/pools/{id}/commands
// and write only hangar/pools/{id}/events and hangar/pools/{id}/heartbeats.
//
// How Mosquitto (Debian, 2.0.11) applies an ACL file differs from the embedded
// broker, as the tests of package broker show:
//   - a subscription to a topic the client may not read is granted (return code
//     1, not 0x80) and nothing it may not read is delivered on it;
//   - a refused publication is acknowledged and dropped, the client stays connected;
//   - a Last Will to a topic the client may not write is accepted at CONNECT and
//     dropped when it would be sent;
//   - a client id is not tied to an identity: a pool that connects with the client
//     id of another pool's persistent session takes it over and the queued
//     messages are lost (it reads none of them);
//   - a pool may join another pool's shared-subscription group: it then gets its
//     turn of the group's messages, which the ACL drops, so they are lost.
//
// Mosquitto 2.0.11 has no option that ties a client id to the certificate
// identity while letting two gateways of a pool (same certificate) keep their
// own sessions (use_username_as_clientid would give them one client id, and
// they would take each other's session over). Hangar closes the last two
// holes in the protocol instead: a gateway's client id and its pool's
// shared-subscription group are derived from the pool's private key
// (docs/adr/0011), so another pool cannot name them. The embedded broker also
// refuses both by identity.
//
// File permissions: started as root, Mosquitto switches to the account named by
// the `user` option (default "mosquitto") before it reads the certificate and key
// files and the ACL file; a key readable only by root leaves a broker with no
// listener. Either make the files readable by that account (for example
// `chgrp mosquitto server-key.pem && chmod 640 server-key.pem`), run Mosquitto as
// an ordinary user (the `user` option is ignored then), or set Params.User. The
// tests of this package run as root with Params.User "root", which keeps root.
package mosquitto

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// DefaultControlPlaneCN is the control plane's certificate CN when
// Params.ControlPlaneCN is empty.
const DefaultControlPlaneCN = "hangar-control-plane"

// Params describes the listener and files of a Mosquitto configuration.
type Params struct {
	// Port is the TCP port of the mTLS listener, e.g. 8883.
	Port int
	// Bind is the address to listen on; empty: every interface.
	Bind string
	// CAFile is the PEM of the CA that issues client certificates (the control
	// plane's CA); CertFile and KeyFile are the broker's certificate and key.
	CAFile, CertFile, KeyFile string
	// PersistenceDir, if set, keeps sessions and queued messages in this
	// directory across restarts (saved every 60 s and at shutdown).
	PersistenceDir string
	// User, if set, is the `user` option: the account Mosquitto switches to when
	// started as root ("root" keeps root). Empty: Mosquitto's default, "mosquitto".
	User string
	// ControlPlaneCN is the control plane's certificate CN; empty:
	// DefaultControlPlaneCN.
	ControlPlaneCN string
	// MaxPacketBytes is `max_packet_size`: Mosquitto disconnects a client that
	// sends a larger packet, reading no more of it. 0: DefaultMaxPacketBytes.
	MaxPacketBytes int
}

// DefaultMaxPacketBytes is the default `max_packet_size` (the embedded
// broker's default too: see broker.DefaultMaxPacketBytes).
const DefaultMaxPacketBytes = 4 << 20

// WriteConfig writes mosquitto.conf and its ACL file, acl.conf, into dir (created
// if needed) and returns the path of mosquitto.conf. File paths in p are made
// absolute.
func WriteConfig(dir string, p Params) (confPath string, err error) {
	if p.Port <= 0 || p.Port > 65535 {
		return "", fmt.Errorf("write mosquitto config: invalid port %d", p.Port)
	}
	if p.CAFile == "" || p.CertFile == "" || p.KeyFile == "" {
		return "", errors.New("write mosquitto config: CAFile, CertFile and KeyFile are required")
	}
	if p.ControlPlaneCN == "" {
		p.ControlPlaneCN = DefaultControlPlaneCN
	}
	if strings.ContainsAny(p.ControlPlaneCN, "\n\r") || strings.TrimSpace(p.ControlPlaneCN) != p.ControlPlaneCN {
		return "", fmt.Errorf("write mosquitto config: invalid control plane CN %q", p.ControlPlaneCN)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("write mosquitto config: %w", err)
	}
	abs := func(path string) (string, error) {
		a, err := filepath.Abs(path)
		if err != nil {
			return "", err
		}
		if strings.ContainsAny(a, "\n\r") {
			return "", fmt.Errorf("invalid path %q", path)
		}
		return a, nil
	}
	for _, f := range []*string{&dir, &p.CAFile, &p.CertFile, &p.KeyFile} {
		if *f, err = abs(*f); err != nil {
			return "", fmt.Errorf("write mosquitto config: %w", err)
		}
	}
	aclPath := filepath.Join(dir, "acl.conf")
	if err := os.WriteFile(aclPath, []byte(aclFile(p.ControlPlaneCN)), 0o644); err != nil {
		return "", fmt.Errorf("write mosquitto config: %w", err)
	}

	var b strings.Builder
	b.WriteString("# Mosquitto 2.0 configuration for Hangar, written by hangarctl.\n")
	b.WriteString("# Clients authenticate with a certificate of the control plane's CA; its CN is\n")
	b.WriteString("# their identity (the username for the ACL file).\n")
	b.WriteString("per_listener_settings false\n")
	b.WriteString("allow_anonymous false\n")
	fmt.Fprintf(&b, "acl_file %s\n", aclPath)
	if p.User != "" {
		fmt.Fprintf(&b, "user %s\n", p.User)
	}
	if p.PersistenceDir != "" {
		pd, err := abs(p.PersistenceDir)
		if err != nil {
			return "", fmt.Errorf("write mosquitto config: %w", err)
		}
		if err := os.MkdirAll(pd, 0o755); err != nil {
			return "", fmt.Errorf("write mosquitto config: %w", err)
		}
		b.WriteString("persistence true\n")
		fmt.Fprintf(&b, "persistence_location %s/\n", strings.TrimSuffix(pd, "/"))
		b.WriteString("autosave_interval 60\n")
	} else {
		b.WriteString("persistence false\n")
	}
	if p.MaxPacketBytes <= 0 {
		p.MaxPacketBytes = DefaultMaxPacketBytes
	}
	b.WriteString("# A larger packet disconnects its sender before it is read (no memory grows).\n")
	fmt.Fprintf(&b, "max_packet_size %d\n", p.MaxPacketBytes)
	b.WriteString("# Runs queued for an offline pool are kept, not dropped after 1000.\n")
	b.WriteString("max_queued_messages 100000\n")
	b.WriteString("log_dest stderr\n")
	b.WriteString("log_type error\nlog_type warning\nlog_type notice\nlog_type information\n")
	b.WriteString("\n")
	if p.Bind != "" {
		fmt.Fprintf(&b, "listener %d %s\n", p.Port, p.Bind)
	} else {
		fmt.Fprintf(&b, "listener %d\n", p.Port)
	}
	b.WriteString("protocol mqtt\n")
	fmt.Fprintf(&b, "cafile %s\n", p.CAFile)
	fmt.Fprintf(&b, "certfile %s\n", p.CertFile)
	fmt.Fprintf(&b, "keyfile %s\n", p.KeyFile)
	b.WriteString("tls_version tlsv1.2\n")
	b.WriteString("require_certificate true\n")
	b.WriteString("use_identity_as_username true\n")

	confPath = filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(b.String()), 0o644); err != nil {
		return "", fmt.Errorf("write mosquitto config: %w", err)
	}
	return confPath, nil
}

// aclFile returns the ACL file: %u is the username, that is the certificate CN.
// Mosquitto refuses a pattern whose %u would hold '+', '#' or '/'.
func aclFile(controlPlaneCN string) string {
	return `# Hangar topic rules, written by hangarctl. Identity = certificate CN.
# Pools (CN = pool id): read their runs and commands, write their events and
# heartbeats (the Last Will goes to heartbeats). Patterns apply to every user.
pattern read hangar/pools/%u/runs
pattern read hangar/pools/%u/commands
pattern write hangar/pools/%u/events
pattern write hangar/pools/%u/heartbeats

# The control plane: everything under hangar/.
user ` + controlPlaneCN + `
topic readwrite hangar/#
`
}
