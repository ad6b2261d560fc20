package ship

import (
	"bytes"
	"encoding/binary"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	logsv1 "github.com/hangar-dev/hangar/gen/go/hangar/logs/v1"
)

// Wire tags of the ShipRequest chunk form that decodeChunk reads:
// ShipRequest.chunk (2, length-delimited) and Chunk's sequence (1,
// varint), stream (2, varint), data (3, length-delimited), time_unix_ms
// (4, varint).
const (
	tagRequestChunk = 2<<3 | 2
	tagSequence     = 1<<3 | 0
	tagStream       = 2<<3 | 0
	tagData         = 3<<3 | 2
	tagTime         = 4<<3 | 0
)

// decodeChunk decodes a ShipRequest that is a Chunk straight from the
// message's buffers (the transport's frames), copying the chunk's bytes
// once, into a slice of their own (the handler keeps them until their
// commit), where materializing the message and proto.Unmarshal copied
// them twice. It reads only the form a marshaller writes: the chunk field
// alone, each of Chunk's four fields at most once, nothing else. For
// anything else (another kind, an unknown or repeated field, a malformed
// message) it returns false and leaves req as it was: the caller decodes
// the message with proto, which gives its own answer or error.
func decodeChunk(data mem.BufferSlice, req *logsv1.ShipRequest) bool {
	var r mem.Reader
	r.Reset(data)
	defer r.Close()
	if tag, ok := uvarint(&r); !ok || tag != tagRequestChunk {
		return false
	}
	n, ok := uvarint(&r)
	if !ok || n != uint64(r.Remaining()) {
		return false
	}
	var (
		c    logsv1.Chunk
		seen uint8
	)
	for r.Remaining() > 0 {
		tag, ok := uvarint(&r)
		if !ok || tag>>3 == 0 || tag>>3 > 4 {
			return false
		}
		bit := uint8(1) << (tag >> 3)
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		if tag == tagData {
			n, ok := uvarint(&r)
			if !ok || n > uint64(r.Remaining()) {
				return false
			}
			var spans [4][]byte
			pieces, err := r.Peek(int(n), spans[:0])
			if err != nil {
				return false
			}
			c.Data = bytes.Join(pieces, nil) // one copy, not zeroed first
			if _, err := r.Discard(int(n)); err != nil {
				return false
			}
			continue
		}
		v, ok := uvarint(&r)
		if !ok {
			return false
		}
		switch tag {
		case tagSequence:
			c.Sequence = v
		case tagStream:
			c.Stream = logsv1.Stream(int32(v))
		case tagTime:
			c.TimeUnixMs = int64(v)
		default: // a known field number with another wire type
			return false
		}
	}
	proto.Reset(req)
	req.Kind = &logsv1.ShipRequest_Chunk{Chunk: &c}
	return true
}

// uvarint reads a varint as encoding/binary does (at most 10 bytes, no
// overflow), from r itself rather than through an interface; false if
// the message ends first or the varint overflows.
func uvarint(r *mem.Reader) (uint64, bool) {
	var x uint64
	var s uint
	for i := range binary.MaxVarintLen64 {
		b, err := r.ReadByte()
		if err != nil {
			return 0, false
		}
		if b < 0x80 {
			if i == binary.MaxVarintLen64-1 && b > 1 {
				return 0, false
			}
			return x | uint64(b)<<s, true
		}
		x |= uint64(b&0x7f) << s
		s += 7
	}
	return 0, false
}
