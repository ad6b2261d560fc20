package mask

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// ordinaryLog returns about size bytes of ordinary CI output, none of it a
// credential: a Terraform/OpenTofu plan and apply (attributes with ids,
// ARNs, hashes, base64 user data, JSON policies), apt-get, go build/test and
// npm install output, shell traces.
func ordinaryLog(size int) []byte {
	rng := rand.New(rand.NewPCG(11, 13))
	hexs := func(n int) string {
		b := make([]byte, n/2)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return fmt.Sprintf("%x", b)
	}
	b64 := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return base64.StdEncoding.EncodeToString(b)
	}
	word := func() string {
		ws := []string{"web", "api", "db", "cache", "worker", "vpc", "subnet", "logs", "assets", "build", "queue", "auth", "billing", "search"}
		return ws[rng.IntN(len(ws))]
	}
	pkgs := []string{"libssl3", "ca-certificates", "curl", "git", "openssh-client", "libcurl4", "zlib1g", "python3.11", "make", "gcc-12", "libc6-dev", "unzip", "jq"}
	mods := []string{"github.com/aws/aws-sdk-go-v2", "golang.org/x/sys", "google.golang.org/grpc", "github.com/spf13/cobra", "go.opentelemetry.io/otel", "github.com/hashicorp/hcl/v2", "golang.org/x/crypto"}
	npms := []string{"react", "lodash", "typescript", "webpack", "@babel/core", "eslint", "express", "axios", "jest", "@types/node"}
	var b bytes.Buffer
	for b.Len() < size {
		switch rng.IntN(14) {
		case 0:
			r := fmt.Sprintf("aws_instance.%s[%d]", word(), rng.IntN(9))
			fmt.Fprintf(&b, "  # %s will be created\n  + resource \"aws_instance\" \"%s\" {\n      + ami                          = \"ami-%s\"\n      + arn                          = (known after apply)\n      + instance_type                = \"t3.micro\"\n      + user_data                    = \"%s\"\n      + user_data_base64             = (known after apply)\n      + tags                         = {\n          + \"Name\" = \"%s\"\n        }\n    }\n\n", r, word(), hexs(17), hexs(40), word())
		case 1:
			fmt.Fprintf(&b, "aws_s3_bucket.%s: Refreshing state... [id=%s-%s-%d]\n", word(), word(), word(), rng.IntN(100000))
		case 2:
			fmt.Fprintf(&b, "aws_iam_role.%s: Creation complete after %ds [id=%s-role]\n      + arn = \"arn:aws:iam::%012d:role/%s\"\n      + unique_id = \"AROA%s\"\n", word(), rng.IntN(30), word(), rng.Int64N(1e12), word(), strings.ToUpper(hexs(16)))
		case 3:
			fmt.Fprintf(&b, "      + policy = jsonencode(\n          {\n              + Statement = [\n                  + {\n                      + Action   = \"s3:GetObject\"\n                      + Effect   = \"Allow\"\n                      + Resource = \"arn:aws:s3:::%s-%s/*\"\n                    },\n                ]\n              + Version   = \"2012-10-17\"\n            }\n        )\n", word(), hexs(8))
		case 4:
			fmt.Fprintf(&b, "module.%s.aws_lambda_function.this[0]: Modifying... [id=%s]\n      ~ source_code_hash = \"%s\" -> \"%s\"\n", word(), word(), b64(32), b64(32))
		case 5:
			fmt.Fprintf(&b, "Get:%d http://deb.debian.org/debian bookworm/main amd64 %s amd64 %d.%d.%d-%d [%d kB]\n", rng.IntN(90), pkgs[rng.IntN(len(pkgs))], rng.IntN(4), rng.IntN(20), rng.IntN(10), rng.IntN(5), rng.IntN(5000))
		case 6:
			p := pkgs[rng.IntN(len(pkgs))]
			fmt.Fprintf(&b, "Selecting previously unselected package %s:amd64.\nPreparing to unpack .../%s_%d.%d_amd64.deb ...\nUnpacking %s:amd64 (%d.%d) ...\nSetting up %s:amd64 (%d.%d) ...\n", p, p, rng.IntN(4), rng.IntN(9), p, rng.IntN(4), rng.IntN(9), p, rng.IntN(4), rng.IntN(9))
		case 7:
			fmt.Fprintf(&b, "go: downloading %s v%d.%d.%d\n", mods[rng.IntN(len(mods))], rng.IntN(2), rng.IntN(40), rng.IntN(20))
		case 8:
			fmt.Fprintf(&b, "ok  \tgithub.com/example/%s/internal/%s\t%d.%03ds\tcoverage: %d.%d%% of statements\n--- PASS: Test%s%s (0.%02ds)\n", word(), word(), rng.IntN(20), rng.IntN(1000), rng.IntN(100), rng.IntN(10), title(word()), title(word()), rng.IntN(100))
		case 9:
			fmt.Fprintf(&b, "%s v%d.%d.%d h1:%s\n%s v%d.%d.%d/go.mod h1:%s\n", mods[rng.IntN(len(mods))], rng.IntN(2), rng.IntN(40), rng.IntN(20), b64(32), mods[rng.IntN(len(mods))], rng.IntN(2), rng.IntN(40), rng.IntN(20), b64(32))
		case 10:
			n := npms[rng.IntN(len(npms))]
			fmt.Fprintf(&b, "npm WARN deprecated %s@%d.%d.%d: this version is no longer supported\n\"%s\": {\n  \"version\": \"%d.%d.%d\",\n  \"resolved\": \"https://registry.npmjs.org/%s/-/%s-%d.%d.%d.tgz\",\n  \"integrity\": \"sha512-%s\"\n},\n", n, rng.IntN(9), rng.IntN(30), rng.IntN(10), n, rng.IntN(9), rng.IntN(30), rng.IntN(10), n, n, rng.IntN(9), rng.IntN(30), rng.IntN(10), b64(64))
		case 11:
			fmt.Fprintf(&b, "added %d packages, and audited %d packages in %ds\n\n%d packages are looking for funding\n  run `npm fund` for details\n", rng.IntN(900), rng.IntN(1000), rng.IntN(60), rng.IntN(200))
		case 12:
			fmt.Fprintf(&b, "+ docker pull registry.example.com/%s@sha256:%s\n+ git checkout %s\nHEAD is now at %s Merge pull request #%d from %s/%s\n", word(), hexs(64), hexs(40), hexs(7), rng.IntN(5000), word(), word())
		default:
			fmt.Fprintf(&b, "\x1b[0m\x1b[1m\x1b[32mApply complete! Resources: %d added, %d changed, %d destroyed.\x1b[0m\n\x1b[0m\x1b[1m\x1b[32m\nOutputs:\x1b[0m\n\n%s_url = \"https://%s.example.com/?id=%s&x=%%2F%s\"\nrequest_id = \"%s-%s-%s\"\n", rng.IntN(40), rng.IntN(5), rng.IntN(3), word(), word(), hexs(12), word(), hexs(8), hexs(4), hexs(12))
		}
	}
	return b.Bytes()
}

func title(s string) string { return strings.ToUpper(s[:1]) + s[1:] }

// TestFalsePositives counts the masks written over several MB of ordinary
// CI output with the known formats on and ten declared secrets that do not
// occur in it: near zero.
func TestFalsePositives(t *testing.T) {
	input := ordinaryLog(6 << 20)
	set, _ := NewSet(benchSecrets(10), Options{})
	var dst bytes.Buffer
	w := set.NewWriter(&dst)
	for rest := input; len(rest) > 0; {
		n := min(4096, len(rest))
		w.Write(rest[:n])
		rest = rest[n:]
	}
	w.Close()
	masks := w.Stats().Masks
	t.Logf("false positives: %d masks in %d bytes of ordinary log", masks, len(input))
	if masks > 2 {
		i := bytes.Index(dst.Bytes(), []byte(DefaultMask))
		t.Errorf("%d false positives, e.g. near %q", masks, dst.Bytes()[max(0, i-80):min(dst.Len(), i+40)])
	}
}
