package cpdir

import "errors"

var (
	// ErrNotInitialized is wrapped by Open for a directory that is not a
	// control-plane directory.
	ErrNotInitialized = errors.New("not a Hangar control-plane directory")
	// ErrAlreadyInitialized is wrapped by Init for a directory that already holds
	// control-plane files.
	ErrAlreadyInitialized = errors.New("already a Hangar control-plane directory")
	// ErrInvalidPoolName is wrapped for a pool name that does not match
	// ^[a-z0-9][a-z0-9-]{0,62}$ or starts with "hangar-".
	ErrInvalidPoolName = errors.New("invalid pool name")
	// ErrPoolExists is wrapped by CreatePool for a name already taken.
	ErrPoolExists = errors.New("pool already exists")
	// ErrPoolNotFound is wrapped by Pool and Token for an unknown name.
	ErrPoolNotFound = errors.New("no such pool")
)
