module tether.test/conformance/gointerp

go 1.27
