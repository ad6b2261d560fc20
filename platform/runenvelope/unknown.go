package runenvelope

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// unmarshalStrict decodes b into m and fails if m, or any message inside it,
// carries unknown fields.
func unmarshalStrict(b []byte, m proto.Message) error {
	if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(b, m); err != nil {
		return fmt.Errorf("decode %s: %w", m.ProtoReflect().Descriptor().Name(), err)
	}
	if path := unknownFieldPath(m.ProtoReflect()); path != "" {
		return fmt.Errorf("decode %s: unknown fields in %s", m.ProtoReflect().Descriptor().Name(), path)
	}
	return nil
}

// unknownFieldPath returns the name of the first message (as a field path) that
// holds unknown fields, or "" if there is none.
func unknownFieldPath(m protoreflect.Message) string {
	if len(m.GetUnknown()) > 0 {
		return string(m.Descriptor().Name())
	}
	var found string
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		sub := func(mm protoreflect.Message) bool {
			if p := unknownFieldPath(mm); p != "" {
				found = string(fd.Name()) + "." + p
				return false
			}
			return true
		}
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			ok := true
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				ok = sub(mv.Message())
				return ok
			})
			return ok
		case fd.IsList():
			if fd.Message() == nil {
				return true
			}
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				if !sub(l.Get(i).Message()) {
					return false
				}
			}
			return true
		case fd.Message() != nil:
			return sub(v.Message())
		}
		return true
	})
	return found
}
