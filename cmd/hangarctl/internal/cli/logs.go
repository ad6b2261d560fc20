package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

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
	dir := fs.String("dir", "", "control-plane directory (or the directory of hangarctl dev)")
	verify := fs.Bool("verify", false, "check the stored byte count and SHA-256 of the log")
	withUsage(fs, e, "logs --dir DIR [--verify] RUN_ID", "Prints the stored, masked log of run RUN_ID from S3 (where logship stores it when the run ends).")
	if err := parseFlags(fs, e, 1); err != nil {
		return err
	}
	if *dir == "" || fs.NArg() != 1 {
		return fmt.Errorf("%w: hangarctl logs --dir DIR [--verify] RUN_ID (the run id is required)", errUsage)
	}
	d, err := cpdir.Open(*dir)
	if err != nil {
		return err
	}
	cfg, err := loadS3Config(d.Path())
	if err != nil {
		return err
	}
	runID := fs.Arg(0)
	key := cfg.Prefix + runID + "/log"
	body, meta, err := cfg.object(ctx, key)
	if err != nil {
		return explainS3(err, cfg, key, runID)
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

// explainS3 turns an S3 error into what the user can act on: an unknown
// run, refused credentials, an unreachable endpoint; never the SDK's dump.
func explainS3(err error, cfg S3Config, key, runID string) error {
	where := "s3://" + cfg.Bucket + "/" + key
	var nsk *types.NoSuchKey
	var api smithy.APIError
	switch {
	case errors.As(err, &nsk), errors.As(err, &api) && (api.ErrorCode() == "NoSuchKey" || api.ErrorCode() == "NotFound"):
		return fmt.Errorf("no stored log for run %s (%s does not exist): check the run id (hangarctl run submit prints it); a run's log is stored when the run ends, so a run still going has none yet (follow it with run submit --follow)", runID, where)
	case errors.As(err, &api) && api.ErrorCode() == "NoSuchBucket":
		return fmt.Errorf("the bucket %s does not exist at %s: check HANGAR_S3_BUCKET (or s3.json in the control-plane directory)", cfg.Bucket, endpointName(cfg))
	case errors.As(err, &api) && (api.ErrorCode() == "AccessDenied" || api.ErrorCode() == "InvalidAccessKeyId" || api.ErrorCode() == "SignatureDoesNotMatch"):
		return fmt.Errorf("S3 refused to read %s (%s): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or s3.json in the control-plane directory)", where, api.ErrorCode())
	case errors.As(err, &api):
		return fmt.Errorf("S3 could not read %s: %s: %s", where, api.ErrorCode(), api.ErrorMessage())
	default:
		var op *net.OpError
		if errors.As(err, &op) {
			return fmt.Errorf("cannot reach S3 at %s to read %s (%v): is it running? (a hangarctl dev stack serves it only while dev runs: use --keep)", endpointName(cfg), where, op.Err)
		}
		return fmt.Errorf("reading %s: %w", where, err)
	}
}

func endpointName(c S3Config) string {
	if c.Endpoint == "" {
		return "AWS S3 (region " + c.Region + ")"
	}
	return c.Endpoint
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
