package directive

import (
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// conf is a test directive with one subdirective of each kind the
// helpers read, and a nested block.
type conf struct {
	token string
	urls  []string
	n     int
	wait  caddy.Duration
	size  int64
	flag  bool
	inner string
}

func parse(input string) (conf, error) {
	var c conf
	d := caddyfile.NewTestDispenser(input)
	d.Next()
	err := Section(d, map[string]Reader{
		"token": String(&c.token),
		"urls":  Strings(&c.urls),
		"n":     Int(&c.n),
		"wait":  Duration(&c.wait),
		"size":  Size(&c.size),
		"flag":  Flag(&c.flag),
		"nested": func(d *caddyfile.Dispenser) error {
			return Section(d, map[string]Reader{"inner": String(&c.inner)})
		},
	})
	return c, err
}

func TestReads(t *testing.T) {
	c, err := parse(`test {
		token s3cret
		urls a b
		n 3
		wait 2d
		size 64KiB
		flag
		nested {
			inner x
		}
	}`)
	if err != nil {
		t.Fatal(err)
	}
	want := conf{token: "s3cret", urls: []string{"a", "b"}, n: 3, wait: caddy.Duration(48 * time.Hour), size: 64 << 10, flag: true, inner: "x"}
	if c.token != want.token || strings.Join(c.urls, ",") != "a,b" || c.n != want.n || c.wait != want.wait ||
		c.size != want.size || !c.flag || c.inner != want.inner {
		t.Fatalf("read %+v", c)
	}
	if _, err := parse("test"); err != nil {
		t.Fatalf("a directive without a block: %v", err)
	}
}

func TestMistakes(t *testing.T) {
	for input, want := range map[string]string{
		"test extra {\n}":                          "test: takes no arguments",
		"test {\ntoken a\ntoken b\n}":              "token: given more than once",
		"test {\nnested {\ninner a\ninner b\n}\n}": "inner: given more than once",
		"test {\ntokn a\n}":                        `test: unknown subdirective "tokn"`,
		"test {\nnested {\nouter a\n}\n}":          `nested: unknown subdirective "outer"`,
		"test {\ntoken\n}":                         "token: missing argument",
		"test {\ntoken s3cret tail-of-it\n}":       "token: too many arguments",
		"test {\ntoken s3cret {\nx\n}\n}":          "token: takes no block",
		"test {\nurls\n}":                          "urls: missing argument",
		"test {\nurls a {\nx\n}\n}":                "urls: takes no block",
		"test {\nflag on\n}":                       "flag: takes no arguments",
		"test {\nflag {\nx\n}\n}":                  "flag: takes no block",
		"test {\nn three\n}":                       `n: "three" is not a whole number`,
		"test {\nn 1 2\n}":                         "n: too many arguments",
		"test {\nwait soon\n}":                     "wait: ",
		"test {\nsize lots\n}":                     `size: want a size such as 64KiB, got "lots"`,
		"test {\nnested x {\n}\n}":                 "nested: takes no arguments",
	} {
		_, err := parse(input)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one containing %q", input, err, want)
		}
		if err != nil && (strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "tail-of-it")) {
			t.Errorf("%q: the error quotes an argument: %v", input, err)
		}
	}
}

func TestBlockRepeatable(t *testing.T) {
	d := caddyfile.NewTestDispenser("test {\nhook a\nhook b\nonce x\n}")
	d.Next()
	var hooks []string
	subs := map[string]Reader{
		"hook": func(d *caddyfile.Dispenser) error {
			var v string
			err := OneArg(d, &v)
			hooks = append(hooks, v)
			return err
		},
		"once": String(new(string)),
	}
	if err := Block(d, "test", subs, "hook"); err != nil || strings.Join(hooks, ",") != "a,b" {
		t.Fatalf("hooks %v, err %v", hooks, err)
	}
	d = caddyfile.NewTestDispenser("test {\nonce a\nonce b\n}")
	d.Next()
	if err := Block(d, "test", subs, "hook"); err == nil || !strings.Contains(err.Error(), "once: given more than once") {
		t.Fatalf("a name not listed as repeatable: %v", err)
	}
}
