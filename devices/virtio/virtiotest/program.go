package virtiotest

// Program is fuzz input read as a guest's (and host's) program, a byte at
// a time; past its end it reads zeros.
type Program struct{ b []byte }

// NewProgram reads input.
func NewProgram(input []byte) *Program { return &Program{b: input} }

// More reports whether bytes are left.
func (p *Program) More() bool { return len(p.b) > 0 }

// Next returns the next byte.
func (p *Program) Next() byte {
	if len(p.b) == 0 {
		return 0
	}
	v := p.b[0]
	p.b = p.b[1:]
	return v
}

// Bytes returns the next n bytes.
func (p *Program) Bytes(n int) []byte {
	out := make([]byte, n)
	k := copy(out, p.b)
	p.b = p.b[k:]
	return out
}
