package rotagate

// The control plane ships in the same binary as the edge: importing it
// here registers client_credentials_control_plane (and its CLI commands)
// wherever the edge is compiled in, so one
// `xcaddy build --with github.com/rotagate/rotagate` installs both halves
// (the way caddy-l4's root package brings in its modules).
import _ "github.com/rotagate/rotagate/controlplane"
