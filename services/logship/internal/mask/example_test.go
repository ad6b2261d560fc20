package mask_test

import (
	"fmt"
	"os"

	"github.com/hangar-dev/hangar/services/logship/internal/mask"
)

func Example() {
	secrets := [][]byte{[]byte("hunter2-hunter2"), []byte("abc")}
	names := []string{"DB_PASSWORD", "SHORT"}
	set, rep := mask.NewSet(secrets, mask.Options{})
	for _, i := range rep.TooShort {
		fmt.Printf("not masking %s: shorter than %d bytes\n", names[i], mask.DefaultMinLength)
	}

	w := set.NewWriter(os.Stdout)
	// The secret arrives split across writes.
	fmt.Fprint(w, "password=hunt")
	fmt.Fprint(w, "er2-hunter2 base64=aHVudGVyMi1odW50ZXIy\n")
	w.Close()
	// Output:
	// not masking SHORT: shorter than 6 bytes
	// password=****** base64=******
}
