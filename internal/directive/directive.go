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
// A block is read from a table of its subdirectives (Block, Section), each
// with a Reader: the readers here for the common kinds of argument, or the
// directive's own for the rest.
//
// Errors never quote an argument's value (it may be a token or a DSN),
// only the subdirective's name, or a value that failed to parse as a
// number, duration or size. The helpers read; defaults and range checks
// belong in Provision and Validate, so that JSON and Caddyfile configs
// behave the same.
package directive

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

// Register registers the handler directive name, read by the
// UnmarshalCaddyfile of a new T, and puts it in Caddy's directive order
// at pos relative to the directive other, so users need no `order`
// option.
func Register[T any, PT interface {
	*T
	caddyhttp.MiddlewareHandler
	caddyfile.Unmarshaler
}](name string, pos httpcaddyfile.Positional, other string) {
	httpcaddyfile.RegisterHandlerDirective(name, func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		handler := PT(new(T))
		if err := handler.UnmarshalCaddyfile(h.Dispenser); err != nil {
			return nil, err
		}
		return handler, nil
	})
	httpcaddyfile.RegisterDirectiveOrder(name, pos, other)
}

// A Reader reads one subdirective, from d on the subdirective's name.
type Reader func(d *caddyfile.Dispenser) error

// Block reads the block that opens after the current token (none when no
// block follows), each subdirective by its reader in subs. A name subs
// does not have is unknown in scope (the enclosing directive or
// subdirective); a name given twice is an error before its reader is
// called, except the names listed in repeatable.
func Block(d *caddyfile.Dispenser, scope string, subs map[string]Reader, repeatable ...string) error {
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		name := d.Val()
		read, ok := subs[name]
		if !ok {
			return Unknown(d, scope)
		}
		if seen[name] && !slices.Contains(repeatable, name) {
			return d.Errf("%s: given more than once", name)
		}
		seen[name] = true
		if err := read(d); err != nil {
			return err
		}
	}
	return nil
}

// Section reads the directive or subdirective d is on, which takes no
// arguments, and its block as Block does.
func Section(d *caddyfile.Dispenser, subs map[string]Reader, repeatable ...string) error {
	name := d.Val()
	if err := NoArgs(d, name); err != nil {
		return err
	}
	return Block(d, name, subs, repeatable...)
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

// Flag reads into v (true) a subdirective that takes neither arguments
// nor a block.
func Flag(v *bool) Reader {
	return func(d *caddyfile.Dispenser) error {
		*v = true
		name := d.Val()
		if err := NoArgs(d, name); err != nil {
			return err
		}
		return End(d, name)
	}
}

// String reads into v a subdirective of exactly one argument.
func String(v *string) Reader {
	return func(d *caddyfile.Dispenser) error { return OneArg(d, v) }
}

// Strings reads into v a subdirective of one or more arguments.
func Strings(v *[]string) Reader {
	return func(d *caddyfile.Dispenser) (err error) {
		*v, err = Args(d)
		return err
	}
}

// Parsed reads into v a subdirective of one argument, converted by
// parse; parse's error is given after the subdirective's name.
func Parsed[T any](v *T, parse func(string) (T, error)) Reader {
	return func(d *caddyfile.Dispenser) error {
		name := d.Val()
		var s string
		if err := OneArg(d, &s); err != nil {
			return err
		}
		x, err := parse(s)
		if err != nil {
			return d.Errf("%s: %v", name, err)
		}
		*v = x
		return nil
	}
}

// New points *v at a new T, which read then reads: for an optional
// setting, where nil means not configured.
func New[T any](v **T, read func(*T) Reader) Reader {
	return func(d *caddyfile.Dispenser) error {
		*v = new(T)
		return read(*v)(d)
	}
}

// Int reads into v a subdirective of one whole number.
func Int(v *int) Reader { return Parsed(v, ParseInt) }

// Duration reads into v a subdirective of one duration.
func Duration(v *caddy.Duration) Reader { return Parsed(v, ParseDuration) }

// Size reads into v a subdirective of one size in bytes, such as 64KiB or
// 1MB.
func Size(v *int64) Reader { return Parsed(v, parseSize) }

// ParseInt parses a whole number.
func ParseInt(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a whole number", s)
	}
	return n, nil
}

// ParseDuration parses a duration in Caddy's syntax: Go's, plus days such
// as 2d.
func ParseDuration(s string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(s)
	return caddy.Duration(dur), err
}

func parseSize(s string) (int64, error) {
	n, err := humanize.ParseBytes(s)
	if err != nil || n > math.MaxInt64 {
		return 0, fmt.Errorf("want a size such as 64KiB, got %q", s)
	}
	return int64(n), nil
}
