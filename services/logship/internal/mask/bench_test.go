package mask

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// benchSecrets returns n random 32-character tokens.
func benchSecrets(n int) [][]byte {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"
	rng := rand.New(rand.NewPCG(42, uint64(n)))
	out := make([][]byte, n)
	for i := range out {
		s := make([]byte, 32)
		for j := range s {
			s[j] = alphabet[rng.IntN(len(alphabet))]
		}
		out[i] = s
	}
	return out
}

// terraformLog returns size bytes of a plausible terraform apply log with
// ANSI colours; about one line in 500 prints a secret, raw or in base64.
func terraformLog(size int, secrets [][]byte) []byte {
	rng := rand.New(rand.NewPCG(7, 7))
	resources := []string{"aws_instance.web", "aws_security_group.lb", "aws_s3_bucket.logs", "module.vpc.aws_subnet.private", "aws_iam_role_policy.ci"}
	var b bytes.Buffer
	for b.Len() < size {
		r := resources[rng.IntN(len(resources))]
		i := rng.IntN(24)
		switch rng.IntN(10) {
		case 0:
			fmt.Fprintf(&b, "\x1b[0m\x1b[1m%s[%d]: Creating...\x1b[0m\x1b[0m\n", r, i)
		case 1:
			fmt.Fprintf(&b, "\x1b[0m\x1b[1m%s[%d]: Still creating... [%ds elapsed]\x1b[0m\x1b[0m\n", r, i, 10*rng.IntN(30))
		case 2:
			fmt.Fprintf(&b, "\x1b[0m\x1b[1m%s[%d]: Creation complete after %ds [id=i-%016x]\x1b[0m\n", r, i, rng.IntN(300), rng.Uint64())
		case 3:
			fmt.Fprintf(&b, "\x1b[0m\x1b[1mPlan:\x1b[0m %d to add, %d to change, %d to destroy.\n", rng.IntN(40), rng.IntN(5), rng.IntN(3))
		case 4:
			fmt.Fprintf(&b, "      \x1b[32m+\x1b[0m\x1b[0m tags = {\n          \x1b[32m+\x1b[0m\x1b[0m \"Name\" = \"web-%d\"\n          \x1b[32m+\x1b[0m\x1b[0m \"env\"  = \"production\"\n        }\n", i)
		case 5:
			fmt.Fprintf(&b, "      \x1b[32m+\x1b[0m\x1b[0m arn = (known after apply)\n      \x1b[32m+\x1b[0m\x1b[0m ami = \"ami-%012x\"\n", rng.Uint64()>>16)
		case 6:
			fmt.Fprintf(&b, "      \x1b[32m+\x1b[0m\x1b[0m policy = jsonencode({\"Version\":\"2012-10-17\",\"Statement\":[{\"Effect\":\"Allow\",\"Action\":[\"s3:GetObject\"],\"Resource\":\"arn:aws:s3:::bucket-%d/*\"}]})\n", i)
		case 7:
			fmt.Fprintf(&b, "%s[%d]: Refreshing state... [id=sg-%08x]\n", r, i, rng.Uint32())
		case 8:
			fmt.Fprintf(&b, "2026-11-27T03:%02d:%02d.%03dZ [DEBUG] provider.terraform-provider-aws_v5.%d.0: HTTP Request Sent: http.method=POST http.url=https://ec2.eu-west-1.amazonaws.com/ tf_rpc=ApplyResourceChange\n", rng.IntN(60), rng.IntN(60), rng.IntN(1000), rng.IntN(80))
		default:
			if rng.IntN(50) == 0 && len(secrets) > 0 {
				s := secrets[rng.IntN(len(secrets))]
				fmt.Fprintf(&b, "export TOKEN=%s AUTH=%s\n", s, base64.StdEncoding.EncodeToString(s))
			} else {
				fmt.Fprintf(&b, "\x1b[0m\x1b[1m\x1b[32mApply complete! Resources: %d added, 0 changed, 0 destroyed.\x1b[0m\n", rng.IntN(50))
			}
		}
	}
	return b.Bytes()[:size]
}

// benchWrite masks input in writes of size bytes per iteration.
func benchWrite(b *testing.B, set *Set, input []byte, size int) {
	b.SetBytes(int64(len(input)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w := set.NewWriter(io.Discard)
		for rest := input; len(rest) > 0; {
			n := min(size, len(rest))
			w.Write(rest[:n])
			rest = rest[n:]
		}
		w.Close()
	}
}

// benchWrites are the write sizes of the throughput benchmarks.
var benchWrites = []int{4096, 64}

func BenchmarkMask(b *testing.B) {
	for _, n := range []int{10, 100} {
		secrets := benchSecrets(n)
		input := terraformLog(8<<20, secrets)
		set, _ := NewSet(secrets, Options{})
		for _, size := range benchWrites {
			b.Run(fmt.Sprintf("terraform/secrets=%d/write=%d", n, size), func(b *testing.B) {
				benchWrite(b, set, input, size)
			})
		}
	}
	for _, n := range []int{16, 64} {
		secret := append(bytes.Repeat([]byte("a"), n-1), 'Z')
		input := bytes.Repeat([]byte("a"), 4<<20)
		set, _ := NewSet([][]byte{secret}, Options{})
		for _, size := range benchWrites {
			b.Run(fmt.Sprintf("adversarial/len=%d/write=%d", n, size), func(b *testing.B) {
				benchWrite(b, set, input, size)
			})
		}
	}
}

// BenchmarkReplacer is the naive reference: strings.Replacer over the same
// patterns, applied to each write on its own (which leaks secrets split
// across writes, mishandles overlaps and knows no wrapping, case or escape
// rule).
func BenchmarkReplacer(b *testing.B) {
	for _, n := range []int{10, 100} {
		secrets := benchSecrets(n)
		input := terraformLog(8<<20, secrets)
		pats, _ := patterns(secrets, Options{})
		var oldnew []string
		for _, p := range pats {
			oldnew = append(oldnew, string(p.b), DefaultMask)
		}
		r := strings.NewReplacer(oldnew...)
		for _, size := range benchWrites {
			b.Run(fmt.Sprintf("terraform/secrets=%d/write=%d", n, size), func(b *testing.B) {
				b.SetBytes(int64(len(input)))
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					for rest := input; len(rest) > 0; {
						n := min(size, len(rest))
						r.WriteString(io.Discard, string(rest[:n]))
						rest = rest[n:]
					}
				}
			})
		}
	}
}

// BenchmarkNewSet measures building the automaton once per run, and the
// memory the compiled set holds (MiB-held) and allocates while building
// (MiB-built).
func BenchmarkNewSet(b *testing.B) {
	for _, c := range memoryCases {
		secrets := c.secrets()
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			held, built := setMemory(secrets)
			for b.Loop() {
				NewSet(secrets, Options{})
			}
			b.ReportMetric(float64(held)/(1<<20), "MiB-held")
			b.ReportMetric(float64(built)/(1<<20), "MiB-built")
		})
	}
}

// BenchmarkBaseline measures the host, for reading the other rows on a busy
// machine: one add per byte (sum) over the same 8 MiB, and bytes.IndexByte
// for an absent byte (memory bandwidth).
func BenchmarkBaseline(b *testing.B) {
	input := terraformLog(8<<20, benchSecrets(10))
	b.Run("sum", func(b *testing.B) {
		b.SetBytes(int64(len(input)))
		var s byte
		for b.Loop() {
			for _, c := range input {
				s += c
			}
		}
		if s == 1 {
			b.Log(s)
		}
	})
	b.Run("indexbyte", func(b *testing.B) {
		b.SetBytes(int64(len(input)))
		for b.Loop() {
			if bytes.IndexByte(input, 0xff) >= 0 {
				b.Fatal("0xff in the log")
			}
		}
	})
}
