package config

import (
	"strings"
	"testing"
)

func TestWorkerNetwork(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		env     map[string]string
		want    string
		wantErr []string
	}{
		{name: "default", env: map[string]string{}, want: "hangar-runs"},
		{name: "a user-defined network", env: map[string]string{"HANGAR_WORKER_NETWORK": "runs"}, want: "runs"},
		{name: "host without opt-in", env: map[string]string{"HANGAR_WORKER_NETWORK": "host"},
			wantErr: []string{"HANGAR_WORKER_NETWORK=host", "HANGAR_WORKER_ALLOW_HOST_NETWORK=true"}},
		{name: "host with opt-in false", env: map[string]string{"HANGAR_WORKER_NETWORK": "host", "HANGAR_WORKER_ALLOW_HOST_NETWORK": "false"},
			wantErr: []string{"HANGAR_WORKER_ALLOW_HOST_NETWORK=true"}},
		{name: "host with opt-in", env: map[string]string{"HANGAR_WORKER_NETWORK": "host", "HANGAR_WORKER_ALLOW_HOST_NETWORK": "true"}, want: "host"},
		{name: "another container's network", env: map[string]string{"HANGAR_WORKER_NETWORK": "container:gateway"},
			wantErr: []string{"HANGAR_WORKER_NETWORK=container:gateway", "another container's network"}},
		{name: "bad opt-in", env: map[string]string{"HANGAR_WORKER_ALLOW_HOST_NETWORK": "yes please"},
			wantErr: []string{"HANGAR_WORKER_ALLOW_HOST_NETWORK"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := map[string]string{"HANGAR_EXECUTOR_ID": "e1"}
			for k, v := range tc.env {
				env[k] = v
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
			if len(tc.wantErr) > 0 {
				if err == nil {
					t.Fatalf("Load = %+v, want an error", c)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not name %q", err, w)
					}
				}
				return
			}
			if err != nil || c.WorkerNetwork != tc.want {
				t.Fatalf("Load: network %q, err %v; want %q", c.WorkerNetwork, err, tc.want)
			}
		})
	}
}
