package bare

import "testing"

func TestEveryGuestAssembles(t *testing.T) {
	names := Names()
	if len(names) < 10 {
		t.Fatalf("only %d guests embedded: %v", len(names), names)
	}
	for _, n := range names {
		img, err := Build(n)
		if err != nil {
			t.Fatal(err)
		}
		if len(img.Binary) == 0 || img.Symbols["_start"] != 0x100000 {
			t.Errorf("%s: %d bytes, _start at %#x; want code at 0x100000", n, len(img.Binary), img.Symbols["_start"])
		}
	}
}

func TestUnknownGuest(t *testing.T) {
	if _, err := Build("no-such-guest"); err == nil {
		t.Fatal("building an unknown guest succeeded")
	}
}
