package ft_test

import (
	"context"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/ftkvm/ftkvm/ft"
	"github.com/ftkvm/ftkvm/ft/ftmetrics"
)

// ExampleMonitor watches a primary: its log records as JSON on stderr,
// its state as Prometheus metrics and JSON over HTTP (what `ftvm primary
// --metrics-addr` serves), and every state change through OnStatus. It
// needs /dev/kvm, so it has no Output line: go test compiles it only.
func ExampleMonitor() {
	var guest ft.Guest // as in Example
	mon := new(ft.Monitor)
	go http.ListenAndServe("127.0.0.1:9464", ftmetrics.Handler("primary", mon.Status))

	cfg := ft.Config{
		Guest:    guest,
		SplitDir: "/mnt/ft",
		Insecure: true,
		Logger:   slog.New(slog.NewJSONHandler(os.Stderr, nil)),
		Monitor:  mon,
		OnStatus: func(s ft.Status) {
			if !s.Protected {
				log.Printf("NOT PROTECTED: %s: %s", s.State, s.Reason)
			}
		},
	}
	l, err := net.Listen("tcp", "127.0.0.1:7700")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := ft.RunPrimary(context.Background(), cfg, l, 30*time.Second); err != nil {
		log.Fatal(err)
	}
}
