// Command caddy is Caddy with its standard modules and rotagate's edge and
// control plane compiled in.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/rotagate/rotagate"
	_ "github.com/rotagate/rotagate/controlplane"
	_ "github.com/rotagate/rotagate/demo"
)

func main() {
	caddycmd.Main()
}
