package config

import (
	"strings"
	"testing"
)

// TestSeparateStderr: HANGAR_WORKER_SEPARATE_STDERR is off by default (one
// pipe for stdout and stderr, ADR 0020), takes a boolean, and anything else
// is refused naming the variable.
func TestSeparateStderr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		value   string // "" leaves it unset
		want    bool
		wantErr bool
	}{
		{name: "default", want: false},
		{name: "true", value: "true", want: true},
		{name: "false", value: "false", want: false},
		{name: "not a boolean", value: "stderr please", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"HANGAR_EXECUTOR_ID": "e1"}
			if tc.value != "" {
				env["HANGAR_WORKER_SEPARATE_STDERR"] = tc.value
			}
			lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
			environ := func() []string {
				var out []string
				for k, v := range env {
					out = append(out, k+"="+v)
				}
				return out
			}
			c, err := Load(lookup, environ)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "HANGAR_WORKER_SEPARATE_STDERR") {
					t.Fatalf("Load: err %v, want an error naming HANGAR_WORKER_SEPARATE_STDERR", err)
				}
				return
			}
			if err != nil || c.SeparateStderr != tc.want {
				t.Fatalf("Load: SeparateStderr %v, err %v; want %v", c != nil && c.SeparateStderr, err, tc.want)
			}
		})
	}
}
