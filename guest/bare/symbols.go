package bare

import (
	"debug/elf"
	"fmt"
)

func symbols(path string) (map[string]uint64, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading symbols of %s: %w", path, err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return nil, fmt.Errorf("reading symbols of %s: %w", path, err)
	}
	out := map[string]uint64{}
	for _, s := range syms {
		if elf.ST_BIND(s.Info) == elf.STB_GLOBAL {
			out[s.Name] = s.Value
		}
	}
	return out, nil
}
