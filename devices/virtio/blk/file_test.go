package blk

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/ftkvm/ftkvm/bounce"
)

// tempImage returns an open image file of n bytes filled with a pattern.
func tempImage(t testing.TB, n int) *os.File {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if _, err := f.Write(pattern(n, 11)); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestFileBackend(t *testing.T) {
	f := tempImage(t, 10000)
	b, err := NewFileBackend(f)
	if err != nil {
		t.Fatal(err)
	}
	if b.Capacity() != 9728 {
		t.Errorf("capacity %d, want 9728 (whole sectors)", b.Capacity())
	}
	got, err := b.Serve(bounce.Request{Tag: 1, Len: 512, Arg: 1024})
	if err != nil || !bytes.Equal(got, pattern(10000, 11)[1024:1536]) {
		t.Fatalf("read: %v", err)
	}
	data := pattern(1024, 200)
	if got, err := b.Serve(bounce.Request{Tag: 2, Len: 1024, Arg: 512, Write: true, Data: data}); err != nil || got != nil {
		t.Fatalf("write: %v, %d bytes back", err, len(got))
	}
	if got, err := b.Backend()(bounce.Request{Tag: 3, Write: true}); err != nil || got != nil {
		t.Fatalf("flush: %v", err)
	}
	back := make([]byte, 1024)
	if _, err := f.ReadAt(back, 512); err != nil || !bytes.Equal(back, data) {
		t.Fatalf("image after the write: %v", err)
	}
	// The last partial sector is still the image's: the backend serves
	// byte ranges; the device keeps to whole sectors of Capacity.
	if _, err := b.Serve(bounce.Request{Tag: 4, Len: 272, Arg: 9728}); err != nil {
		t.Errorf("tail read: %v", err)
	}
	for _, r := range []bounce.Request{
		{Tag: 5, Len: 512, Arg: 9728},
		{Tag: 6, Len: 1, Arg: 10000},
		{Tag: 7, Len: 512, Arg: 1 << 63},
		{Tag: 8, Len: 512, Arg: ^uint64(0)},
		{Tag: 9, Len: 0},
		{Tag: 10, Len: 512, Arg: 9728, Write: true, Data: make([]byte, 512)},
		{Tag: 11, Len: 512, Write: true, Data: make([]byte, 10)},
	} {
		if _, err := b.Serve(r); err == nil {
			t.Errorf("tag %d: %d bytes at %d accepted", r.Tag, r.Len, r.Arg)
		}
	}
	if st, _ := f.Stat(); st.Size() != 10000 {
		t.Errorf("the image grew to %d bytes", st.Size())
	}

	f.Close()
	for _, r := range []bounce.Request{{Len: 512}, {Len: 512, Write: true, Data: make([]byte, 512)}, {Write: true}} {
		if _, err := b.Serve(r); err == nil {
			t.Errorf("%+v on a closed file: no error", r)
		}
	}
	if _, err := NewFileBackend(f); err == nil {
		t.Error("a closed file accepted")
	}
	dir, err := os.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer dir.Close()
	if _, err := NewFileBackend(dir); err == nil {
		t.Error("a directory accepted")
	}
}
