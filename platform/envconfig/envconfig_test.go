package envconfig

import (
	"errors"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func lookupOnly(env map[string]string) *Reader {
	return New(func(k string) (string, bool) {
		v, ok := env[k]
		return v, ok
	})
}

func TestDuration(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    time.Duration
		wantErr string
	}{
		{"unset uses default", nil, 70 * time.Minute, ""},
		{"blank uses default", map[string]string{"HANGAR_RUN_TIMEOUT": "  "}, 70 * time.Minute, ""},
		{"minutes", map[string]string{"HANGAR_RUN_TIMEOUT": "120m"}, 120 * time.Minute, ""},
		{"seconds with spaces", map[string]string{"HANGAR_RUN_TIMEOUT": " 1000s "}, 1000 * time.Second, ""},
		{"compound", map[string]string{"HANGAR_RUN_TIMEOUT": "1h30m"}, 90 * time.Minute, ""},
		{"bad unit", map[string]string{"HANGAR_RUN_TIMEOUT": "7x"}, 70 * time.Minute,
			`HANGAR_RUN_TIMEOUT: invalid duration "7x" (use Go syntax such as 90s or 70m)`},
		{"bare number", map[string]string{"HANGAR_RUN_TIMEOUT": "60"}, 70 * time.Minute,
			`HANGAR_RUN_TIMEOUT: invalid duration "60" (use Go syntax such as 90s or 70m)`},
		{"zero", map[string]string{"HANGAR_RUN_TIMEOUT": "0s"}, 70 * time.Minute,
			`HANGAR_RUN_TIMEOUT: duration "0s" must be positive`},
		{"negative", map[string]string{"HANGAR_RUN_TIMEOUT": "-5m"}, 70 * time.Minute,
			`HANGAR_RUN_TIMEOUT: duration "-5m" must be positive`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := lookupOnly(tt.env)
			got := r.Duration("HANGAR_RUN_TIMEOUT", 70*time.Minute)
			if got != tt.want {
				t.Errorf("Duration = %v, want %v", got, tt.want)
			}
			checkErr(t, r.Err(), tt.wantErr)
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("Err = %q, want nil", err)
	case want != "" && err == nil:
		t.Errorf("Err = nil, want %q", want)
	case want != "" && err.Error() != want:
		t.Errorf("Err = %q, want %q", err, want)
	}
}

func TestStringRequiredSecret(t *testing.T) {
	env := map[string]string{"A": "x y", "EMPTY": "", "TOKEN": "s3cr3t"}
	r := lookupOnly(env)
	if got := r.String("A", "d"); got != "x y" {
		t.Errorf("String(A) = %q", got)
	}
	if got := r.String("MISSING", "d"); got != "d" {
		t.Errorf("String(MISSING) = %q", got)
	}
	if got := r.String("EMPTY", "d"); got != "d" {
		t.Errorf("String(EMPTY) = %q", got)
	}
	if got := r.Required("A"); got != "x y" {
		t.Errorf("Required(A) = %q", got)
	}
	if got := r.Secret("TOKEN"); got != "s3cr3t" {
		t.Errorf("Secret(TOKEN) = %q", got)
	}
	if got := r.Required("MISSING"); got != "" {
		t.Errorf("Required(MISSING) = %q", got)
	}
	r.Secret("EMPTY")
	checkErr(t, r.Err(), "MISSING: required but not set\nEMPTY: required but not set")
}

func TestInt(t *testing.T) {
	tests := []struct {
		val     string
		want    int
		wantErr string
	}{
		{"", 4, ""},
		{"8", 8, ""},
		{" 1 ", 1, ""},
		{"64", 64, ""},
		{"0", 4, "SLOTS: 0 out of range [1, 64]"},
		{"65", 4, "SLOTS: 65 out of range [1, 64]"},
		{"four", 4, `SLOTS: invalid integer "four"`},
		{"1.5", 4, `SLOTS: invalid integer "1.5"`},
	}
	for _, tt := range tests {
		t.Run(tt.val, func(t *testing.T) {
			r := lookupOnly(map[string]string{"SLOTS": tt.val})
			if got := r.Int("SLOTS", 4, 1, 64); got != tt.want {
				t.Errorf("Int = %d, want %d", got, tt.want)
			}
			checkErr(t, r.Err(), tt.wantErr)
		})
	}
}

func TestBool(t *testing.T) {
	tests := []struct {
		val     string
		def     bool
		want    bool
		wantErr string
	}{
		{"", true, true, ""},
		{"true", false, true, ""},
		{"1", false, true, ""},
		{"false", true, false, ""},
		{"0", true, false, ""},
		{"yes", true, true, `DEBUG: invalid boolean "yes" (use true, false, 1 or 0)`},
		{"TRUE", false, false, `DEBUG: invalid boolean "TRUE" (use true, false, 1 or 0)`},
	}
	for _, tt := range tests {
		t.Run(tt.val, func(t *testing.T) {
			r := lookupOnly(map[string]string{"DEBUG": tt.val})
			if got := r.Bool("DEBUG", tt.def); got != tt.want {
				t.Errorf("Bool = %v, want %v", got, tt.want)
			}
			checkErr(t, r.Err(), tt.wantErr)
		})
	}
}

func TestList(t *testing.T) {
	tests := []struct {
		val  string
		want []string
	}{
		{"", nil},
		{"a", []string{"a"}},
		{" /a:/b , /c:/d ", []string{"/a:/b", "/c:/d"}},
		{"a,,b,", []string{"a", "b"}},
		{",,", nil},
	}
	for _, tt := range tests {
		t.Run(tt.val, func(t *testing.T) {
			r := lookupOnly(map[string]string{"L": tt.val})
			if got := r.List("L"); !slices.Equal(got, tt.want) {
				t.Errorf("List = %q, want %q", got, tt.want)
			}
			checkErr(t, r.Err(), "")
		})
	}
}

func TestOneOf(t *testing.T) {
	tests := []struct {
		val     string
		want    string
		wantErr string
	}{
		{"", "info", ""},
		{"debug", "debug", ""},
		{" warn ", "warn", ""},
		{"loud", "info", `LOG_LEVEL: invalid value "loud" (allowed: debug, info, warn, error)`},
	}
	for _, tt := range tests {
		t.Run(tt.val, func(t *testing.T) {
			r := lookupOnly(map[string]string{"LOG_LEVEL": tt.val})
			if got := r.OneOf("LOG_LEVEL", "info", "debug", "info", "warn", "error"); got != tt.want {
				t.Errorf("OneOf = %q, want %q", got, tt.want)
			}
			checkErr(t, r.Err(), tt.wantErr)
		})
	}
}

func TestBase64(t *testing.T) {
	// "hangar-key\xfb\xff" has bytes that differ between alphabets.
	want := "hangar-key\xfb\xff"
	tests := []struct {
		name    string
		val     string
		want    string
		wantErr string
	}{
		{"std padded", "aGFuZ2FyLWtlefv/", want, ""},
		{"url", "aGFuZ2FyLWtlefv_", want, ""},
		{"std with padding", "aGk=", "hi", ""},
		{"raw", "aGk", "hi", ""},
		{"wrapped lines", " aGFuZ2Fy\nLWtlefv/\n", want, ""},
		{"unset", "", "", "KEY: required but not set"},
		{"garbage", "not*base64", "", "KEY: invalid base64 (bad data at byte 3; value not shown)"},
		{"truncated", "aGFuZ", "", "KEY: invalid base64 (bad data at byte 4; value not shown)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := lookupOnly(map[string]string{"KEY": tt.val})
			if got := r.Base64("KEY"); string(got) != tt.want {
				t.Errorf("Base64 = %q, want %q", got, tt.want)
			}
			checkErr(t, r.Err(), tt.wantErr)
		})
	}
}

func TestSecretValuesNeverInErrors(t *testing.T) {
	secret := "-----BEGIN OPAQUE BLOB----- s3cr3t-v@lue!"
	r := lookupOnly(map[string]string{"HANGAR_POOL_PRIVATE_KEY": secret, "HANGAR_TOKEN": "   "})
	r.Base64("HANGAR_POOL_PRIVATE_KEY")
	r.Secret("HANGAR_TOKEN")
	err := r.Err()
	if err == nil {
		t.Fatal("Err = nil, want errors")
	}
	for _, part := range strings.Fields(secret) {
		if len(part) > 3 && strings.Contains(err.Error(), part) {
			t.Errorf("error %q contains part %q of the value", err, part)
		}
	}
	if !strings.Contains(err.Error(), "HANGAR_POOL_PRIVATE_KEY") || !strings.Contains(err.Error(), "HANGAR_TOKEN") {
		t.Errorf("error %q does not name both variables", err)
	}
}

func TestPrefixed(t *testing.T) {
	r := FromMap(map[string]string{
		"HANGAR_METADATA_zone":    "a",
		"HANGAR_METADATA_Rack_ID": "r-1",
		"HANGAR_METADATA_empty":   "",
		"HANGAR_OTHER":            "x",
	})
	got := r.Prefixed("HANGAR_METADATA_")
	want := map[string]string{"zone": "a", "Rack_ID": "r-1", "empty": ""}
	if !maps.Equal(got, want) {
		t.Errorf("Prefixed = %v, want %v", got, want)
	}
	checkErr(t, r.Err(), "")

	r = FromMap(map[string]string{"HANGAR_METADATA_": "x"})
	if got := r.Prefixed("HANGAR_METADATA_"); len(got) != 0 {
		t.Errorf("Prefixed = %v, want empty", got)
	}
	checkErr(t, r.Err(), "HANGAR_METADATA_: empty key after prefix HANGAR_METADATA_")

	r = lookupOnly(nil)
	r.Prefixed("HANGAR_METADATA_")
	if r.Err() == nil {
		t.Error("Prefixed without WithEnviron: Err = nil")
	}
}

func TestRejectUnknown(t *testing.T) {
	r := FromMap(map[string]string{
		"HANGAR_RUN_TIMEOUT":   "70m",
		"HANGAR_LOGS_TIMOUT":   "7m",
		"HANGAR_METADATA_zone": "a",
		"HANGAR_UNUSED":        "",
		"PATH":                 "/bin",
	})
	r.Duration("HANGAR_RUN_TIMEOUT", time.Hour)
	r.Duration("HANGAR_LOGS_TIMEOUT", 7*time.Minute)
	r.Prefixed("HANGAR_METADATA_")
	r.RejectUnknown("HANGAR_")
	checkErr(t, r.Err(),
		"HANGAR_LOGS_TIMOUT: unknown variable (misspelt, or not used by this service)\n"+
			"HANGAR_UNUSED: unknown variable (misspelt, or not used by this service)")
}

func TestErrorsInCallOrder(t *testing.T) {
	r := lookupOnly(map[string]string{"B": "x", "C": "7x"})
	r.Required("A")
	r.Int("B", 0, 0, 1)
	r.Duration("C", time.Second)
	r.String("D", "")
	err := r.Err()
	var lines []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		lines = append(lines, strings.SplitN(e.Error(), ":", 2)[0])
	}
	if want := []string{"A", "B", "C"}; !slices.Equal(lines, want) {
		t.Errorf("error order = %v, want %v", lines, want)
	}
	if errors.Unwrap(err) != nil {
		t.Errorf("joined error should not single-unwrap")
	}
	if lookupOnly(nil).Err() != nil {
		t.Error("fresh Reader: Err != nil")
	}
}

// FuzzDuration checks that ParseDuration never panics, accepts only positive
// durations, and words every rejection with the value quoted.
func FuzzDuration(f *testing.F) {
	for _, s := range []string{"90s", "70m", "7x", "", "0", "-1s", "1h30m", " 5s "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			if d != 0 {
				t.Fatalf("ParseDuration(%q) = %v with error", s, d)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "invalid duration ") && !strings.HasPrefix(msg, "duration ") {
				t.Fatalf("unexpected error wording %q", msg)
			}
			return
		}
		if d <= 0 {
			t.Fatalf("ParseDuration(%q) = %v, want > 0", s, d)
		}
		r := lookupOnly(map[string]string{"D": s})
		if got := r.Duration("D", time.Second); got != d || r.Err() != nil {
			t.Fatalf("Reader.Duration(%q) = %v, %v; ParseDuration = %v", s, got, r.Err(), d)
		}
	})
}

var base64ErrRE = regexp.MustCompile(`^invalid base64 \((bad data at byte \d+; )?value not shown\)$`)

// FuzzBase64 checks that DecodeBase64 never panics and that its errors have
// a fixed shape that cannot carry any part of the value.
func FuzzBase64(f *testing.F) {
	for _, s := range []string{"aGk=", "aGk", "aGFuZ2FyLWtlefv_", "not*base64", "====", "a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, err := DecodeBase64(s)
		if err != nil && !base64ErrRE.MatchString(err.Error()) {
			t.Fatalf("DecodeBase64 error %q does not match %v", err, base64ErrRE)
		}
	})
}

func TestFloat(t *testing.T) {
	tests := []struct {
		val     string
		want    float64
		wantErr string
	}{
		{"", 1, ""},
		{"0.25", 0.25, ""},
		{" 0 ", 0, ""},
		{"1", 1, ""},
		{"1.5", 1, "RATIO: 1.5 out of range [0, 1]"},
		{"NaN", 1, `RATIO: invalid number "NaN"`},
		{"half", 1, `RATIO: invalid number "half"`},
	}
	for _, tt := range tests {
		t.Run(tt.val, func(t *testing.T) {
			r := lookupOnly(map[string]string{"RATIO": tt.val})
			if got := r.Float("RATIO", 1, 0, 1); got != tt.want {
				t.Errorf("Float = %v, want %v", got, tt.want)
			}
			checkErr(t, r.Err(), tt.wantErr)
		})
	}
}

func TestSecretOrFile(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/token"
	if err := os.WriteFile(file, []byte("  tok-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := dir + "/empty"
	os.WriteFile(empty, nil, 0o600)
	for _, tc := range []struct {
		name    string
		env     map[string]string
		want    string
		wantErr string
	}{
		{"value", map[string]string{"T": "tok"}, "tok", ""},
		{"file", map[string]string{"T_FILE": file}, "tok-from-file", ""},
		{"both", map[string]string{"T": "tok", "T_FILE": file}, "", "T: set either T or T_FILE, not both"},
		{"missing file", map[string]string{"T_FILE": dir + "/nope"}, "", "T_FILE: cannot read"},
		{"empty file", map[string]string{"T_FILE": empty}, "", "T_FILE: " + empty + " is empty"},
		{"neither", map[string]string{}, "", "T: required but not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := FromMap(tc.env)
			got := r.SecretOrFile("T")
			err := r.Err()
			if tc.wantErr == "" {
				if err != nil || got != tc.want {
					t.Fatalf("got %q, %v; want %q", got, err, tc.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if strings.Contains(err.Error(), "tok-from-file") {
				t.Fatal("the secret leaked into the error")
			}
		})
	}
}
