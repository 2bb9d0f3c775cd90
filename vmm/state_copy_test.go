package vmm

import (
	"bytes"
	"testing"
)

// CopyPages appends the listed pages in order after what dst holds, and
// refuses a frame outside guest memory without changing dst.
func TestCopyPages(t *testing.T) {
	v, _, _ := kvmlessVM(t)
	for pfn, b := range map[uint32]byte{2: 0x22, 7: 0x77} {
		if err := v.Machine().LoadPage(pfn, bytes.Repeat([]byte{b}, pageSize)); err != nil {
			t.Fatal(err)
		}
	}
	buf := make([]byte, 3, 64<<10)
	got, err := (machine{v}).CopyPages(buf, []uint32{7, 2})
	if err != nil {
		t.Fatal(err)
	}
	want := append([]byte{0, 0, 0}, append(bytes.Repeat([]byte{0x77}, pageSize), bytes.Repeat([]byte{0x22}, pageSize)...)...)
	if !bytes.Equal(got, want) || &got[0] != &buf[0] {
		t.Fatalf("CopyPages: %d bytes, equal %v, reused the buffer %v", len(got), bytes.Equal(got, want), &got[0] == &buf[0])
	}
	got[3] = 0
	if page, _ := v.Machine().PageContents(7); page[0] != 0x77 {
		t.Error("CopyPages aliases guest memory")
	}
	outside := uint32(v.mem.Size() / pageSize)
	if got, err := (machine{v}).CopyPages(buf, []uint32{2, outside}); err == nil || len(got) != 3 {
		t.Errorf("a frame outside memory: %d bytes, %v", len(got), err)
	}
}
