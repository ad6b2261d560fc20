package config

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hangar-dev/hangar/platform/envconfig"
)

func TestLoadDefaults(t *testing.T) {
	cfg, err := Load(envconfig.FromMap(map[string]string{"HANGAR_GATEWAY_SOMETHING": "x"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RunInitializationPolicy != "" || cfg.GRPCAddr != ":7301" || cfg.DebugAddr != ":9301" ||
		cfg.LogLevel != slog.LevelInfo || cfg.TLSCert != "" || cfg.Telemetry.OTLPEndpoint != "" ||
		cfg.Telemetry.ServiceName != ServiceName {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestLoad(t *testing.T) {
	policyFile := filepath.Join(t.TempDir(), "policy.rego")
	if err := os.WriteFile(policyFile, []byte("package hangar"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(envconfig.FromMap(map[string]string{
		"HANGAR_RUN_INITIALIZATION_POLICY": policyFile,
		"HANGAR_POLICY_GRPC_ADDR":          "127.0.0.1:0",
		"HANGAR_POLICY_DEBUG_ADDR":         "[::1]:9999",
		"HANGAR_TLS_CERT":                  "c.pem",
		"HANGAR_TLS_KEY":                   "k.pem",
		"HANGAR_TLS_CA":                    "ca.pem",
		"HANGAR_OTLP_ENDPOINT":             "collector:4317",
		"HANGAR_LOG_LEVEL":                 "debug",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		RunInitializationPolicy: policyFile,
		GRPCAddr:                "127.0.0.1:0",
		DebugAddr:               "[::1]:9999",
		TLSCert:                 "c.pem", TLSKey: "k.pem", TLSCA: "ca.pem",
		LogLevel: slog.LevelDebug,
	}
	got := cfg
	if got.Telemetry.OTLPEndpoint != "collector:4317" {
		t.Errorf("OTLP endpoint = %q", got.Telemetry.OTLPEndpoint)
	}
	got.Telemetry = want.Telemetry
	if got != want {
		t.Errorf("Load() = %+v\nwant %+v", got, want)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want []string // each must appear in the error
	}{
		{
			name: "bad log level",
			env:  map[string]string{"HANGAR_LOG_LEVEL": "verbose"},
			want: []string{"HANGAR_LOG_LEVEL", `"verbose"`},
		},
		{
			name: "bad addresses",
			env:  map[string]string{"HANGAR_POLICY_GRPC_ADDR": "7301", "HANGAR_POLICY_DEBUG_ADDR": "localhost:http"},
			want: []string{"HANGAR_POLICY_GRPC_ADDR", "HANGAR_POLICY_DEBUG_ADDR"},
		},
		{
			name: "cert without key",
			env:  map[string]string{"HANGAR_TLS_CERT": "c.pem"},
			want: []string{"HANGAR_TLS_CA, HANGAR_TLS_CERT, HANGAR_TLS_KEY: must be set together"},
		},
		{
			name: "client CA without cert",
			env:  map[string]string{"HANGAR_POLICY_TLS_CLIENT_CA": "ca.pem"},
			want: []string{"HANGAR_POLICY_TLS_CLIENT_CA"},
		},
		{
			name: "unknown variable",
			env:  map[string]string{"HANGAR_POLICY_GRPC_ADRR": ":1"},
			want: []string{"HANGAR_POLICY_GRPC_ADRR: unknown variable"},
		},
		{
			name: "bad OTLP setting",
			env:  map[string]string{"HANGAR_OTLP_INSECURE": "yes"},
			want: []string{"HANGAR_OTLP_INSECURE"},
		},
		{
			name: "several problems at once",
			env:  map[string]string{"HANGAR_TLS_KEY": "k.pem", "HANGAR_POLICY_OOPS": "1", "HANGAR_POLICY_GRPC_ADDR": "x"},
			want: []string{"HANGAR_POLICY_OOPS", "HANGAR_POLICY_GRPC_ADDR", "must be set together"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(envconfig.FromMap(tt.env))
			if err == nil {
				t.Fatal("Load succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
