package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hangar-dev/hangar/platform/tlsconfig/testpki"
)

// TestExecutorIDFromCertificate: with a pool certificate the executor's id
// is the certificate's; HANGAR_EXECUTOR_ID may repeat it, not contradict it.
func TestExecutorIDFromCertificate(t *testing.T) {
	t.Parallel()
	ca, err := testpki.NewCA("pool CA")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cert, key, err := ca.IssueRole("p1", "executor", "exec-1")
	if err != nil {
		t.Fatal(err)
	}
	opCert, opKey, err := ca.IssueRole("p1", "operator", "exec-1")
	if err != nil {
		t.Fatal(err)
	}
	tlsEnv := map[string]string{"HANGAR_TLS_CA": write("ca.crt", ca.CertPEM()), "HANGAR_TLS_CERT": write("e.crt", cert), "HANGAR_TLS_KEY": write("e.key", key)}
	with := func(extra map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range tlsEnv {
			m[k] = v
		}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		wantErr string
	}{
		{"id from the certificate", with(nil), "exec-1", ""},
		{"id repeating the certificate's", with(map[string]string{"HANGAR_EXECUTOR_ID": "exec-1"}), "exec-1", ""},
		{"id contradicting the certificate", with(map[string]string{"HANGAR_EXECUTOR_ID": "exec-2"}), "", `HANGAR_EXECUTOR_ID: "exec-2", but the certificate in HANGAR_TLS_CERT is for executor "exec-1"`},
		{"an operator certificate", with(map[string]string{"HANGAR_TLS_CERT": write("o.crt", opCert), "HANGAR_TLS_KEY": write("o.key", opKey)}), "", "needs a certificate of role executor"},
		{"certificate without CA", map[string]string{"HANGAR_TLS_CERT": tlsEnv["HANGAR_TLS_CERT"], "HANGAR_TLS_KEY": tlsEnv["HANGAR_TLS_KEY"]}, "", "HANGAR_TLS_CA"},
		{"enrollment and certificate", with(map[string]string{"HANGAR_TLS_ENROLL_CERT": "x", "HANGAR_TLS_ENROLL_KEY": "y"}), "", "HANGAR_TLS_ENROLL_CERT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			lookup := func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok }
			environ := func() []string {
				var out []string
				for k, v := range tc.env {
					out = append(out, k+"="+v)
				}
				return out
			}
			c, err := Load(lookup, environ)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Load = %v, want an error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.ExecutorID != tc.want || c.PoolTLS == nil {
				t.Fatalf("ExecutorID = %q (TLS %v), want %q", c.ExecutorID, c.PoolTLS != nil, tc.want)
			}
		})
	}
}
