package main

import (
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDeviceOptions(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.img")
	content := []byte(strings.Repeat("ftkvm disk\n", 93)) // 1023 bytes: one whole sector
	if err := os.WriteFile(img, content, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		o    deviceOptions
		want string // error substring; "" for none
	}{
		{deviceOptions{diskMode: "shared"}, ""},
		{deviceOptions{diskMode: "mirrored"}, "want shared or nonshared"},
		{deviceOptions{diskMode: "shared", disk: img + ".missing"}, "no such file"},
		{deviceOptions{diskMode: "shared", netSpec: "vde:x"}, "want tap:NAME"},
		{deviceOptions{diskMode: "shared", netSpec: "tap:"}, "want tap:NAME"},
		{deviceOptions{diskMode: "shared", netSpec: "tap:t0", mac: "01:00:5e:00:00:01x"}, "--mac"},
		{deviceOptions{diskMode: "shared", netSpec: "tap:t0", mac: "52:54:00:f7:00:01", guestIP: "fe80::1"}, "want an IPv4 address"},
		{deviceOptions{diskMode: "shared", work: "disk"}, "needs --disk"},
		{deviceOptions{diskMode: "shared", work: "diskbench"}, "needs --disk"},
		{deviceOptions{diskMode: "shared", work: "net"}, "needs --net"},
		{deviceOptions{diskMode: "shared", work: "tetris", disk: img}, "want disk, diskbench or net"},
		{deviceOptions{diskMode: "nonshared", disk: img, work: "disk"}, ""},
	} {
		d, err := c.o.open()
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%+v: %v", c.o, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%+v: error %v, want one containing %q", c.o, err, c.want)
		}
		d.close()
	}

	// The identity the log header pins: size and content hash, or the
	// generation the user gives.
	d, err := (&deviceOptions{diskMode: "nonshared", disk: img}).open()
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	sum := sha256.Sum256(content[:512])
	if want := fmt.Sprintf("size=512 sha256=%x", sum); d.identity != want || !d.ownCopy {
		t.Errorf("identity %q (own copy %v), want %q (own copy)", d.identity, d.ownCopy, want)
	}
	g, err := (&deviceOptions{diskMode: "shared", disk: img, diskGen: "7"}).open()
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	if g.identity != "size=512 generation=7" || g.ownCopy {
		t.Errorf("identity %q (own copy %v), want size=512 generation=7 (shared)", g.identity, g.ownCopy)
	}
}
