package logio

import (
	"fmt"
	"reflect"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/ftkvm/ftkvm/replay/logpb"
)

// MaxDecoded bounds what one record may cost once decoded, as estimated by
// decodedCost from its wire format before it is decoded. A record within
// MaxPayload can otherwise decode to far more than its size: an empty
// message takes 2 bytes on the wire and a Go struct of 50 to 250 bytes and
// a slot in a growing slice in memory, so a 64 MiB payload of them decodes
// to several GiB. The largest honest records, landmarks carrying pages,
// cost under 100 bytes per page besides the page contents: all the pages
// of the largest guest (vmm.MaxMemory, 3 GiB) come to some 70 MiB, plus at
// most MaxPayload of contents. A record past it is refused with
// ErrTooLarge, like a record past MaxPayload, by the Reader and by the
// Writer.
const MaxDecoded = 256 << 20

// The cost model, in bytes on a 64-bit machine, of what proto.Unmarshal
// allocates (protobuf-go's generated, open-struct messages), checked
// against the real figures by TestDecodedCostModel:
const (
	// listGrowth: a repeated field's slice grows by append, by 1.25 at a
	// time once large, so the slices allocated on the way add up to about
	// five times the final one.
	listGrowth = 5
	// pointerSlot, bytesSlot and stringSlot are the sizes of an element of
	// a repeated message, bytes and string field.
	pointerSlot = 8
	bytesSlot   = 24
	stringSlot  = 16
	// maxNesting bounds the depth of known message fields followed; the
	// schema is not recursive, so only a schema change could reach it.
	maxNesting = 64
)

// decodedCost estimates how many bytes proto.Unmarshal allocates to decode
// b as a message of type md, without decoding it: each message value costs
// its Go struct, each bytes or string value its length, each element of a
// repeated field its slot in the slice times listGrowth (a packed scalar
// twice its size: that slice is sized in advance), and each unknown field
// listGrowth times its wire size (it is kept verbatim in a growing slice);
// singular scalars live in their struct. It stops as soon as the estimate
// passes limit and then returns more than limit, together with the number
// of message values seen. Malformed wire data
// ends the scan: proto.Unmarshal then reports it.
func decodedCost(b []byte, md protoreflect.MessageDescriptor, limit int64) (cost, messages int64) {
	s := costScan{limit: limit, cost: messageSize(md)}
	s.message(b, md, 0)
	return s.cost, s.messages
}

type costScan struct{ limit, cost, messages int64 }

// message adds the cost of the fields in b (the contents of one message of
// type md, the struct itself counted by the caller). It reports whether
// the estimate is still within the limit.
func (s *costScan) message(b []byte, md protoreflect.MessageDescriptor, depth int) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return true
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return true
		}
		field, val := b[:n+m], b[n:n+m]
		b = b[n+m:]
		fd := md.Fields().ByNumber(num)
		if fd == nil || !wireTypeFits(fd, typ) {
			s.cost += listGrowth * int64(len(field)) // unknown: kept verbatim
		} else {
			switch fd.Kind() {
			case protoreflect.MessageKind:
				v, _ := protowire.ConsumeBytes(val)
				s.messages++
				s.cost += messageSize(fd.Message()) + listSlot(fd, pointerSlot)
				if s.cost > s.limit {
					return false
				}
				if depth+1 >= maxNesting {
					s.cost = s.limit + 1
					return false
				}
				if !s.message(v, fd.Message(), depth+1) {
					return false
				}
			case protoreflect.BytesKind:
				v, _ := protowire.ConsumeBytes(val)
				s.cost += roundUp(len(v)) + listSlot(fd, bytesSlot)
			case protoreflect.StringKind:
				v, _ := protowire.ConsumeBytes(val)
				s.cost += roundUp(len(v)) + listSlot(fd, stringSlot)
			default:
				switch {
				case !fd.IsList(): // a singular scalar: in its struct
				case typ == protowire.BytesType: // packed
					s.cost += 2 * packedCount(val, fd.Kind()) * scalarSize(fd.Kind())
				default:
					s.cost += listSlot(fd, scalarSize(fd.Kind()))
				}
			}
		}
		if s.cost > s.limit {
			return false
		}
	}
	return true
}

// roundUp is n rounded up to the allocator's 16 bytes.
func roundUp(n int) int64 { return (int64(n) + 15) &^ 15 }

// listSlot is what one more element of fd costs in its slice, if fd is
// repeated.
func listSlot(fd protoreflect.FieldDescriptor, size int64) int64 {
	if fd.IsList() {
		return listGrowth * size
	}
	return 0
}

// wireTypeFits reports whether proto.Unmarshal decodes a field of this
// wire type into fd rather than keeping it as an unknown field.
func wireTypeFits(fd protoreflect.FieldDescriptor, typ protowire.Type) bool {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.BytesKind, protoreflect.StringKind:
		return typ == protowire.BytesType
	case protoreflect.GroupKind:
		return false // none in the schema: counted as unknown, verbatim
	}
	want := scalarWireType(fd.Kind())
	return typ == want || fd.IsList() && typ == protowire.BytesType
}

func scalarWireType(k protoreflect.Kind) protowire.Type {
	switch k {
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	}
	return protowire.VarintType
}

// scalarSize is the Go size of one element of a repeated scalar.
func scalarSize(k protoreflect.Kind) int64 {
	switch k {
	case protoreflect.BoolKind:
		return 1
	case protoreflect.EnumKind, protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Uint32Kind,
		protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return 4
	}
	return 8
}

// packedCount is the number of elements in a packed field's value (its
// length prefix included).
func packedCount(val []byte, k protoreflect.Kind) int64 {
	v, _ := protowire.ConsumeBytes(val)
	switch scalarWireType(k) {
	case protowire.Fixed32Type:
		return int64(len(v) / 4)
	case protowire.Fixed64Type:
		return int64(len(v) / 8)
	}
	var n int64
	for _, c := range v {
		if c < 0x80 {
			n++
		}
	}
	return n
}

// messageSizes holds the Go struct size of every message of the log's
// schema, filled once: looking one up allocates nothing.
var messageSizes = func() map[protoreflect.FullName]int64 {
	sizes := map[protoreflect.FullName]int64{}
	var add func(protoreflect.MessageDescriptors)
	add = func(mds protoreflect.MessageDescriptors) {
		for i := 0; i < mds.Len(); i++ {
			md := mds.Get(i)
			if mt, err := protoregistry.GlobalTypes.FindMessageByName(md.FullName()); err == nil {
				if t := reflect.TypeOf(mt.Zero().Interface()); t.Kind() == reflect.Pointer {
					sizes[md.FullName()] = roundUp(int(t.Elem().Size()))
				}
			}
			add(md.Messages())
		}
	}
	add((&logpb.Event{}).ProtoReflect().Descriptor().ParentFile().Messages())
	return sizes
}()

// messageSize is the size of the Go struct a message of type md decodes
// into, rounded up to the allocator's 16 bytes; 256 for a type outside the
// log's schema.
func messageSize(md protoreflect.MessageDescriptor) int64 {
	if size, ok := messageSizes[md.FullName()]; ok {
		return size
	}
	return 256
}

// checkDecoded refuses a payload that would decode to more than MaxDecoded.
func checkDecoded(payload []byte, md protoreflect.MessageDescriptor) error {
	cost, messages := decodedCost(payload, md, MaxDecoded)
	if cost <= MaxDecoded {
		return nil
	}
	return fmt.Errorf("the %s's %d-byte payload would decode to more than the limit of %d bytes (MaxDecoded): the estimate passed it after %d messages",
		strings.ToLower(string(md.Name())), len(payload), MaxDecoded, messages)
}

// CheckDecoded refuses, with an error wrapping ErrTooLarge, a marshalled
// message of m's type that would decode to more than MaxDecoded, without
// decoding it: the check the Reader makes on every record, for callers
// that receive records another way (an FT backup, from its log channel).
// m is only read for its type.
func CheckDecoded(payload []byte, m proto.Message) error {
	if err := checkDecoded(payload, m.ProtoReflect().Descriptor()); err != nil {
		return fmt.Errorf("%w: %v", ErrTooLarge, err)
	}
	return nil
}
