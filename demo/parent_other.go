//go:build !linux

package demo

// stopWithParent does nothing here: only Linux can tie the demo to its
// parent, so a script that must stop the demo builds it with `go build`
// and signals the binary itself rather than `go run`.
func stopWithParent() error { return nil }
