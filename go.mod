module github.com/ftkvm/ftkvm

go 1.26.8

require (
	github.com/bobuhiro11/gokvm v0.0.8-0.20231003020000-f53faca69d28
	github.com/klauspost/compress v1.20.3
	golang.org/x/arch v0.2.0
	golang.org/x/sys v0.49.0
)

require google.golang.org/protobuf v1.36.12

require github.com/cespare/xxhash/v2 v2.3.0 // indirect
