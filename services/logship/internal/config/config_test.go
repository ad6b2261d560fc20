package config

import (
	"strings"
	"testing"
	"time"

	"github.com/hangar-dev/hangar/platform/envconfig"
)

func TestLoad(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantErr string // substring; "" means success
		check   func(t *testing.T, c *Config)
	}{
		{"defaults", map[string]string{"HANGAR_S3_BUCKET": "logs"}, "", func(t *testing.T, c *Config) {
			if c.GRPCAddr != ":7302" || c.DebugAddr != ":9302" || c.Region != "us-east-1" || c.Prefix != "runs/" ||
				c.PathStyle || c.MaskMinLength != 6 || c.ChunkInterval != 5*time.Second ||
				c.SpoolDir != "/var/lib/hangar/logship" || c.LogLevel != "info" || c.LogMaxBytes != 64<<20 || c.RunLogsOnStdout || !c.MaskKnownFormats {
				t.Errorf("defaults: %+v", c)
			}
		}},
		{"all set", map[string]string{"HANGAR_S3_BUCKET": "logs", "HANGAR_S3_ENDPOINT": "http://127.0.0.1:9000",
			"HANGAR_S3_PATH_STYLE": "true", "HANGAR_S3_PREFIX": "hangar/", "HANGAR_MASK_MIN_LENGTH": "8",
			"HANGAR_LOGSHIP_CHUNK_INTERVAL": "2s", "HANGAR_LOG_LEVEL": "debug", "HANGAR_MASK_KNOWN_FORMATS": "false"}, "", func(t *testing.T, c *Config) {
			if !c.PathStyle || c.MaskKnownFormats || c.Endpoint != "http://127.0.0.1:9000" || c.Prefix != "hangar/" || c.MaskMinLength != 8 ||
				c.ChunkInterval != 2*time.Second || c.LogLevel != "debug" {
				t.Errorf("got %+v", c)
			}
		}},
		{"log limit and standard output", map[string]string{"HANGAR_S3_BUCKET": "logs", "HANGAR_LOG_MAX_BYTES": "65536",
			"HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT": "true"}, "", func(t *testing.T, c *Config) {
			if c.LogMaxBytes != 65536 || !c.RunLogsOnStdout {
				t.Errorf("got %+v", c)
			}
		}},
		{"large log limit", map[string]string{"HANGAR_S3_BUCKET": "logs", "HANGAR_LOG_MAX_BYTES": "10737418240"}, "", func(t *testing.T, c *Config) {
			if c.LogMaxBytes != 10<<30 {
				t.Errorf("LogMaxBytes = %d", c.LogMaxBytes)
			}
		}},
		{"log limit zero", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_LOG_MAX_BYTES": "0"}, "HANGAR_LOG_MAX_BYTES", nil},
		{"log limit below 64 KiB", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_LOG_MAX_BYTES": "65535"}, "HANGAR_LOG_MAX_BYTES", nil},
		{"log limit with a unit", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_LOG_MAX_BYTES": "64MiB"}, "HANGAR_LOG_MAX_BYTES", nil},
		{"log limit negative", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_LOG_MAX_BYTES": "-1"}, "HANGAR_LOG_MAX_BYTES", nil},
		{"bad standard output flag", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT": "yes"},
			"HANGAR_RUN_LOGS_ON_STANDARD_OUTPUT", nil},
		{"idle close and spool guard", map[string]string{"HANGAR_S3_BUCKET": "logs", "HANGAR_LOG_IDLE_CLOSE": "2h",
			"HANGAR_SPOOL_MIN_FREE_MB": "0"}, "", func(t *testing.T, c *Config) {
			if c.LogIdleClose != 2*time.Hour || c.SpoolMinFreeMB != 0 {
				t.Errorf("got %+v", c)
			}
		}},
		{"idle close and spool guard defaults", map[string]string{"HANGAR_S3_BUCKET": "logs"}, "", func(t *testing.T, c *Config) {
			if c.LogIdleClose != 30*time.Minute || c.SpoolMinFreeMB != 1024 {
				t.Errorf("got %+v", c)
			}
		}},
		{"idle close too short", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_LOG_IDLE_CLOSE": "30s"}, "HANGAR_LOG_IDLE_CLOSE", nil},
		{"spool guard negative", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_SPOOL_MIN_FREE_MB": "-1"}, "HANGAR_SPOOL_MIN_FREE_MB", nil},
		{"bucket missing", map[string]string{}, "HANGAR_S3_BUCKET", nil},
		{"bad bool", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_S3_PATH_STYLE": "yes"}, "HANGAR_S3_PATH_STYLE", nil},
		{"bad duration", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_LOGSHIP_CHUNK_INTERVAL": "5"}, "HANGAR_LOGSHIP_CHUNK_INTERVAL", nil},
		{"min length out of range", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_MASK_MIN_LENGTH": "0"}, "HANGAR_MASK_MIN_LENGTH", nil},
		{"bad endpoint", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_S3_ENDPOINT": "127.0.0.1:9000"}, "HANGAR_S3_ENDPOINT", nil},
		{"bad prefix", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_S3_PREFIX": "runs"}, "HANGAR_S3_PREFIX", nil},
		{"bad log level", map[string]string{"HANGAR_S3_BUCKET": "b", "HANGAR_LOG_LEVEL": "loud"}, "HANGAR_LOG_LEVEL", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Load(envconfig.FromMap(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}
