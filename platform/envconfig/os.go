package envconfig

import "os"

// FromOS returns a Reader over the process environment, listing included.
func FromOS() *Reader {
	return New(os.LookupEnv, WithEnviron(os.Environ))
}
