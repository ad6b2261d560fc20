package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/broker"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/cpdir"
	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/mosquitto"
)

// runBroker runs the embedded MQTT broker with the control-plane directory's
// broker certificate and CA until ctx is done (SIGINT or SIGTERM), or, with
// --mosquitto-config, writes a Mosquitto configuration for the same CA and rules.
func runBroker(ctx context.Context, e env) error {
	fs := newFlags("broker", e)
	dir := fs.String("dir", "", "control-plane directory (see hangarctl ca init)")
	listen := fs.String("listen", "127.0.0.1:8883", "host:port of the mTLS listener")
	data := fs.String("data", "", "directory for persistent sessions (default: in memory for the embedded broker, OUTDIR/data for Mosquitto)")
	mosqOut := fs.String("mosquitto-config", "", "write a Mosquitto configuration into this directory instead of running the embedded broker")
	verbose := fs.Bool("v", false, "log every connection (debug)")
	maxPacket := fs.Int("max-packet-bytes", broker.DefaultMaxPacketBytes, "largest MQTT packet accepted; keep it above the gateways' HANGAR_MAX_ENVELOPE_BYTES")
	if err := parseFlags(fs, e, 0); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("%w: --dir is required", errUsage)
	}
	if *maxPacket < 64<<10 {
		return fmt.Errorf("%w: --max-packet-bytes %d: at least 65536", errUsage, *maxPacket)
	}
	host, portStr, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("%w: --listen %q: %v", errUsage, *listen, err)
	}
	d, err := cpdir.Open(*dir)
	if err != nil {
		return err
	}
	if *mosqOut != "" {
		port, err := strconv.Atoi(portStr)
		if err != nil || port <= 0 {
			return fmt.Errorf("%w: --listen %q: Mosquitto needs a fixed port", errUsage, *listen)
		}
		return writeMosquitto(e, d, *mosqOut, host, port, *data, *maxPacket)
	}

	tlsCfg, err := d.BrokerTLS()
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	b, err := broker.Start(ctx, broker.Config{
		Addr:           *listen,
		TLS:            tlsCfg,
		DataDir:        *data,
		Logger:         slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level})),
		ControlPlaneCN: cpdir.ControlPlaneCN,
		MaxPacketBytes: *maxPacket,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "broker listening on mqtts://%s\n", b.Addr())
	<-ctx.Done()
	return b.Close()
}

// writeMosquitto writes the Mosquitto configuration and says how to run it.
func writeMosquitto(e env, d *cpdir.Dir, out, host string, port int, data string, maxPacket int) error {
	if data == "" {
		data = filepath.Join(out, "data")
	}
	conf, err := mosquitto.WriteConfig(out, mosquitto.Params{
		Port:           port,
		Bind:           host,
		CAFile:         d.CAFile(),
		CertFile:       d.BrokerCertFile(),
		KeyFile:        d.BrokerKeyFile(),
		PersistenceDir: data,
		ControlPlaneCN: cpdir.ControlPlaneCN,
		MaxPacketBytes: maxPacket,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "wrote %s and %s\n", conf, filepath.Join(filepath.Dir(conf), "acl.conf"))
	fmt.Fprintln(e.stdout, "run it as an ordinary user that can read the broker key and write the data directory:")
	fmt.Fprintf(e.stdout, "  mosquitto -c %s\n", conf)
	fmt.Fprintln(e.stdout, "(started as root, mosquitto switches to user mosquitto before reading the key: make the key and the data directory accessible to it, or add `user root`)")
	return nil
}
