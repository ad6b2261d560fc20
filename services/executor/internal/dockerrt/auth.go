package dockerrt

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/distribution/reference"
	"github.com/moby/moby/api/pkg/authconfig"
	"github.com/moby/moby/api/types/registry"
)

// dockerConfig is the part of a Docker CLI config.json that Hangar reads:
// static credentials per registry. Credential stores and helpers
// (credsStore, credHelpers) are not run.
type dockerConfig struct {
	Auths map[string]dockerAuth `json:"auths"`
}

type dockerAuth struct {
	// Auth is base64("user:password").
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

// loadDockerConfig reads dir/config.json. Its errors never quote the file's
// content.
func loadDockerConfig(dir string) (*dockerConfig, error) {
	p := filepath.Join(dir, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("read registry credentials: %w", err)
	}
	var cfg dockerConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			return nil, fmt.Errorf("parse %s: invalid JSON at offset %d", p, syn.Offset)
		}
		return nil, fmt.Errorf("parse %s: not a Docker config file", p)
	}
	for key, a := range cfg.Auths {
		if _, _, err := a.credentials(); err != nil {
			return nil, fmt.Errorf("parse %s: registry %q: %w", p, key, err)
		}
	}
	return &cfg, nil
}

// credentials returns the user name and password of an entry.
func (a dockerAuth) credentials() (user, password string, err error) {
	if a.Auth == "" {
		return a.Username, a.Password, nil
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(a.Auth))
	if err != nil {
		return "", "", fmt.Errorf("auth is not valid base64")
	}
	user, password, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", fmt.Errorf("auth is not base64 of user:password")
	}
	return user, password, nil
}

// registryHost returns the registry host of an image reference, "docker.io"
// for Docker Hub images.
func registryHost(image string) (string, error) {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return "", fmt.Errorf("parse image reference: %w", err)
	}
	return reference.Domain(named), nil
}

// normalizeRegistry turns a config.json key ("https://index.docker.io/v1/",
// "registry.example.com:5000", "http://127.0.0.1:5000/v2/") into a host
// comparable with registryHost.
func normalizeRegistry(key string) string {
	key = strings.ToLower(strings.TrimSpace(key))
	key = strings.TrimPrefix(key, "https://")
	key = strings.TrimPrefix(key, "http://")
	if i := strings.IndexByte(key, '/'); i >= 0 {
		key = key[:i]
	}
	switch key {
	case "index.docker.io", "registry-1.docker.io":
		return "docker.io"
	}
	return key
}

// registryAuth returns the X-Registry-Auth value (base64url JSON) for pulling
// image with the credentials of dir/config.json, or "" if dir is empty or
// holds no credentials for the image's registry.
func registryAuth(dir, image string) (string, error) {
	if dir == "" {
		return "", nil
	}
	host, err := registryHost(image)
	if err != nil {
		return "", err
	}
	cfg, err := loadDockerConfig(dir)
	if err != nil {
		return "", err
	}
	for key, a := range cfg.Auths {
		if normalizeRegistry(key) != strings.ToLower(host) {
			continue
		}
		user, password, err := a.credentials()
		if err != nil {
			return "", fmt.Errorf("registry %q: %w", key, err)
		}
		enc, err := authconfig.Encode(registry.AuthConfig{
			Username:      user,
			Password:      password,
			IdentityToken: a.IdentityToken,
			ServerAddress: key,
		})
		if err != nil {
			return "", fmt.Errorf("encode credentials of registry %q: %w", key, err)
		}
		return enc, nil
	}
	return "", nil
}
