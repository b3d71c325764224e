// Package directive holds the Caddyfile parsing helpers of both halves'
// directives (`client_credentials` and `client_credentials_control_plane`),
// so that the same mistake gets the same words from either:
//
//	<name>: given more than once     a subdirective repeated in its block
//	<scope>: unknown subdirective "x"
//	<name>: missing argument
//	<name>: too many arguments
//	<name>: takes no arguments
//	<name>: takes no block           a block after a subdirective without one
//
// Errors never quote an argument's value (it may be a token or a DSN),
// only the subdirective's name, or a value that failed to parse as a
// number, duration or size. The helpers read; defaults and range checks
// belong in Provision and Validate, so that JSON and Caddyfile configs
// behave the same.
package directive

import (
	"math"
	"slices"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"
)

// Block calls fn for each subdirective of the block that opens after the
// current token (none when no block follows), with d on the
// subdirective's name. A name given twice is an error before fn sees it.
// fn answers a name it does not know with Unknown. Names listed in
// repeatable may be given any number of times.
func Block(d *caddyfile.Dispenser, fn func(name string) error, repeatable ...string) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		if seen[name] && !slices.Contains(repeatable, name) {
			return d.Errf("%s: given more than once", name)
		}
		seen[name] = true
		if err := fn(name); err != nil {
			return err
		}
	}
	return nil
}

// Unknown is the error for the subdirective d is on, which scope (the
// enclosing directive or subdirective) does not have.
func Unknown(d *caddyfile.Dispenser, scope string) error {
	return d.Errf("%s: unknown subdirective %q", scope, d.Val())
}

// NoArgs checks that nothing follows the current token (the directive
// or subdirective named name) on its line; a block may follow.
func NoArgs(d *caddyfile.Dispenser, name string) error {
	if d.NextArg() {
		return d.Errf("%s: takes no arguments", name)
	}
	return nil
}

// End checks that the subdirective named name ends here: no further
// argument on its line, and no block after it.
func End(d *caddyfile.Dispenser, name string) error {
	if d.NextArg() {
		return d.Errf("%s: too many arguments", name)
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("%s: takes no block", name)
	}
	return nil
}

// Flag reads a subdirective that takes neither arguments nor a block.
func Flag(d *caddyfile.Dispenser) error {
	name := d.Val()
	if err := NoArgs(d, name); err != nil {
		return err
	}
	return End(d, name)
}

// NextArg reads the next argument of the subdirective named name into v,
// which must be there. It does not check what follows: see End.
func NextArg(d *caddyfile.Dispenser, name string, v *string) error {
	if !d.NextArg() {
		return d.Errf("%s: missing argument", name)
	}
	*v = d.Val()
	return nil
}

// OneArg reads a subdirective of exactly one argument, without a block.
func OneArg(d *caddyfile.Dispenser, v *string) error {
	name := d.Val()
	if err := NextArg(d, name, v); err != nil {
		return err
	}
	return End(d, name)
}

// Args reads a subdirective of one or more arguments, without a block.
func Args(d *caddyfile.Dispenser) ([]string, error) {
	name := d.Val()
	args := d.RemainingArgs()
	if len(args) == 0 {
		return nil, d.Errf("%s: missing argument", name)
	}
	return args, End(d, name)
}

// Int reads a subdirective of one whole number.
func Int(d *caddyfile.Dispenser, v *int) error {
	name := d.Val()
	var s string
	if err := OneArg(d, &s); err != nil {
		return err
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		return d.Errf("%s: %q is not a whole number", name, s)
	}
	*v = n
	return nil
}

// Duration reads a subdirective of one duration (Caddy's syntax: Go's,
// plus days such as 2d).
func Duration(d *caddyfile.Dispenser, v *caddy.Duration) error {
	name := d.Val()
	var s string
	if err := OneArg(d, &s); err != nil {
		return err
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil {
		return d.Errf("%s: %v", name, err)
	}
	*v = caddy.Duration(dur)
	return nil
}

// Size reads a subdirective of one size in bytes, such as 64KiB or 1MB.
func Size(d *caddyfile.Dispenser, v *int64) error {
	name := d.Val()
	var s string
	if err := OneArg(d, &s); err != nil {
		return err
	}
	n, err := humanize.ParseBytes(s)
	if err != nil || n > math.MaxInt64 {
		return d.Errf("%s: want a size such as 64KiB, got %q", name, s)
	}
	*v = int64(n)
	return nil
}
