package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/hangar-dev/hangar/cmd/hangarctl/internal/cpdir"
)

// S3Config says where a control plane reads run logs. `hangarctl dev` writes it
// to DIR/s3.json; otherwise it comes from HANGAR_S3_ENDPOINT, HANGAR_S3_BUCKET,
// HANGAR_S3_REGION, HANGAR_S3_PATH_STYLE and the AWS credential variables.
type S3Config struct {
	Endpoint  string `json:"endpoint,omitempty"`
	Bucket    string `json:"bucket"`
	Region    string `json:"region"`
	PathStyle bool   `json:"path_style"`
	AccessKey string `json:"access_key,omitempty"`
	SecretKey string `json:"secret_key,omitempty"`
	Prefix    string `json:"prefix,omitempty"`
}

const s3ConfigFile = "s3.json"

// Save writes the configuration into a control-plane directory (0600: it may
// hold credentials).
func (c S3Config) Save(dir string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, s3ConfigFile), b, 0o600)
}

// loadS3Config reads DIR/s3.json when present, else the environment.
func loadS3Config(dir string) (S3Config, error) {
	var c S3Config
	b, err := os.ReadFile(filepath.Join(dir, s3ConfigFile))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &c); err != nil {
			return c, fmt.Errorf("%s: %w", filepath.Join(dir, s3ConfigFile), err)
		}
	case errors.Is(err, os.ErrNotExist):
		c = S3Config{Endpoint: os.Getenv("HANGAR_S3_ENDPOINT"), Bucket: os.Getenv("HANGAR_S3_BUCKET"), Region: os.Getenv("HANGAR_S3_REGION"), Prefix: os.Getenv("HANGAR_S3_PREFIX")}
		if v := os.Getenv("HANGAR_S3_PATH_STYLE"); v != "" {
			if c.PathStyle, err = strconv.ParseBool(v); err != nil {
				return c, fmt.Errorf("HANGAR_S3_PATH_STYLE: %q is not a boolean", v)
			}
		}
	default:
		return c, err
	}
	if c.Bucket == "" {
		return c, fmt.Errorf("no S3 bucket configured: set HANGAR_S3_BUCKET (or run hangarctl dev, which writes %s)", s3ConfigFile)
	}
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	if c.Prefix == "" {
		c.Prefix = "runs/"
	}
	return c, nil
}

func (c S3Config) client() *s3.Client {
	opts := s3.Options{Region: c.Region, UsePathStyle: c.PathStyle}
	if c.Endpoint != "" {
		opts.BaseEndpoint = aws.String(c.Endpoint)
	}
	if c.AccessKey != "" {
		opts.Credentials = credentials.NewStaticCredentialsProvider(c.AccessKey, c.SecretKey, "")
	} else {
		opts.Credentials = credentials.NewStaticCredentialsProvider(os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY"), os.Getenv("AWS_SESSION_TOKEN"))
	}
	return s3.New(opts)
}

// object reads one object and its user metadata.
func (c S3Config) object(ctx context.Context, key string) ([]byte, map[string]string, error) {
	out, err := c.client().GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(c.Bucket), Key: aws.String(key)})
	if err != nil {
		return nil, nil, fmt.Errorf("get s3://%s/%s: %w", c.Bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("read s3://%s/%s: %w", c.Bucket, key, err)
	}
	return b, out.Metadata, nil
}

// Get reads one object.
func (c S3Config) Get(ctx context.Context, key string) ([]byte, error) {
	b, _, err := c.object(ctx, key)
	return b, err
}

// runLogs prints a run's stored, masked log.
func runLogs(ctx context.Context, e env) error {
	fs := newFlags("logs", e)
	dir := fs.String("dir", "", "control-plane directory")
	verify := fs.Bool("verify", false, "check the stored byte count and SHA-256 of the log")
	if err := parseFlags(fs, e, 1); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() != 1 {
		return fmt.Errorf("%w: usage: hangarctl logs --dir DIR [--verify] RUN_ID", errUsage)
	}
	if _, err := cpdir.Open(*dir); err != nil {
		return err
	}
	cfg, err := loadS3Config(*dir)
	if err != nil {
		return err
	}
	key := cfg.Prefix + fs.Arg(0) + "/log"
	body, meta, err := cfg.object(ctx, key)
	if err != nil {
		return err
	}
	if *verify {
		if err := verifyLog(body, meta); err != nil {
			return fmt.Errorf("s3://%s/%s: %w", cfg.Bucket, key, err)
		}
	}
	if _, err := e.stdout.Write(body); err != nil {
		return err
	}
	if *verify {
		fmt.Fprintf(e.stderr, "verified: %d bytes, sha256 %s\n", len(body), meta["hangar-sha256"])
	}
	return nil
}

// verifyLog checks a log object against the byte count and checksum logship
// recorded in its metadata.
func verifyLog(body []byte, meta map[string]string) error {
	wantBytes, wantSum := meta["hangar-bytes"], meta["hangar-sha256"]
	if wantBytes == "" || wantSum == "" {
		return errors.New("the object has no hangar-bytes/hangar-sha256 metadata to verify against")
	}
	if n, err := strconv.Atoi(wantBytes); err != nil || n != len(body) {
		return fmt.Errorf("size mismatch: metadata says %s bytes, object has %d", wantBytes, len(body))
	}
	sum := sha256.Sum256(body)
	if got := hex.EncodeToString(sum[:]); got != wantSum {
		return fmt.Errorf("checksum mismatch: metadata says %s, object hashes to %s", wantSum, got)
	}
	return nil
}
