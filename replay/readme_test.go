package replay_test

import (
	"os"
	"strings"
	"testing"
)

// The README's embedding example is ExampleRecordFile's code: every line
// of the README's block marked "// replay.ExampleRecordFile" appears in
// the Example, in order, so the README cannot show code that no longer
// compiles or runs.
func TestREADMEShowsExampleRecordFile(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const marker = "```go\n// replay.ExampleRecordFile\n"
	i := strings.Index(string(readme), marker)
	if i < 0 {
		t.Fatalf("README.md has no Go block beginning %q: the embedding example must stay ExampleRecordFile's code", "// replay.ExampleRecordFile")
	}
	block := string(readme[i+len(marker):])
	block = block[:strings.Index(block, "```")]
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	example := string(src)
	example = example[strings.Index(example, "func ExampleRecordFile()"):]
	example = example[:strings.Index(example, "\n}\n")]
	var lines []string
	for _, l := range strings.Split(example, "\n") {
		lines = append(lines, strings.TrimSpace(l))
	}
	at := 0
	for _, want := range strings.Split(block, "\n") {
		want = strings.TrimSpace(want)
		if want == "" {
			continue
		}
		for at < len(lines) && lines[at] != want {
			at++
		}
		if at == len(lines) {
			t.Errorf("README line %q is not in ExampleRecordFile (in order)", want)
			return
		}
		at++
	}
}
