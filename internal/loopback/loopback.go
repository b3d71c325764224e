// Package loopback gives tests a loopback port that nothing listens on,
// for the Caddy sites and servers they start: no test binds a fixed port.
package loopback

import (
	"net"
	"testing"
)

// FreePort asks the kernel for a loopback port nothing listens on now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
