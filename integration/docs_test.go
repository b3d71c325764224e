package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// docFiles are the published documents: the README and the pages under
// docs/, as paths relative to this package.
func docFiles(t *testing.T) []string {
	t.Helper()
	pages, err := filepath.Glob("../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(pages) == 0 {
		t.Fatal("no pages under docs/")
	}
	return append([]string{"../README.md"}, pages...)
}

var caddyfileBlock = regexp.MustCompile("(?s)```caddyfile\n(.*?)```")

// TestDocsCaddyfiles adapts every ```caddyfile block of the README and of
// the pages under docs/, so the documentation cannot drift from what the
// directives accept.
func TestDocsCaddyfiles(t *testing.T) {
	adapter := caddyconfig.GetAdapter("caddyfile")
	perFile := map[string]int{}
	for _, file := range docFiles(t) {
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range caddyfileBlock.FindAllStringSubmatch(string(raw), -1) {
			perFile[file]++
			name := fmt.Sprintf("%s caddyfile block %d", strings.TrimPrefix(file, "../"), i+1)
			if _, warnings, err := adapter.Adapt([]byte(b[1]), nil); err != nil {
				t.Errorf("%s: %v\n%s", name, err, b[1])
			} else if len(warnings) > 0 {
				t.Errorf("%s: warnings %v", name, warnings)
			}
		}
	}
	// The README's minimal setup is the first Caddyfile a reader copies.
	if perFile["../README.md"] == 0 {
		t.Error("the README has no caddyfile block")
	}
	t.Logf("adapted caddyfile blocks per file: %v", perFile)
}

var (
	fence       = regexp.MustCompile("^\\s*(```|~~~)")
	codeSpan    = regexp.MustCompile("(`+)[^`]*?(`+)")
	inlineLink  = regexp.MustCompile(`\]\(([^)\s]+)(?:\s+"[^"]*")?\)`)
	refLink     = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*(\S+)`)
	heading     = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	htmlAnchor  = regexp.MustCompile(`<a\s+(?:id|name)="([^"]+)"`)
	headingLink = regexp.MustCompile(`\[([^\]]*)\]\([^)]*\)`)
	hasScheme   = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// outsideFences is a markdown file's lines with those of fenced code
// blocks blanked, so line numbers stay those of the file.
func outsideFences(raw string) []string {
	lines := strings.Split(raw, "\n")
	inFence := false
	for i, line := range lines {
		if fence.MatchString(line) {
			inFence = !inFence
			lines[i] = ""
		} else if inFence {
			lines[i] = ""
		}
	}
	return lines
}

// anchors are the fragment ids GitHub gives a markdown file: one per
// heading (lower case, punctuation dropped, spaces to hyphens, a repeated
// one suffixed -1, -2…) and any <a id="…"> or <a name="…">.
func anchors(raw string) map[string]bool {
	ids := map[string]bool{}
	seen := map[string]int{}
	for _, line := range strings.Split(raw, "\n") {
		for _, m := range htmlAnchor.FindAllStringSubmatch(line, -1) {
			ids[m[1]] = true
		}
	}
	for _, line := range outsideFences(raw) {
		m := heading.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		slug := slugify(headingLink.ReplaceAllString(m[1], "$1"))
		id := slug
		if n := seen[slug]; n > 0 {
			id = fmt.Sprintf("%s-%d", slug, n)
		}
		seen[slug]++
		ids[id] = true
	}
	return ids
}

func slugify(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) || unicode.Is(unicode.Mn, r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// brokenLinks checks every relative link of the markdown files: the file
// it names exists, and a #fragment names a heading (or an explicit anchor)
// of the file it points into. It returns what is wrong and how many
// relative links it checked.
func brokenLinks(files []string) (problems []string, checked int) {
	cache := map[string]map[string]bool{}
	anchorsOf := func(path string) (map[string]bool, error) {
		if a, ok := cache[path]; ok {
			return a, nil
		}
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		cache[path] = anchors(string(raw))
		return cache[path], nil
	}
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		for n, line := range outsideFences(string(raw)) {
			line = codeSpan.ReplaceAllString(line, "``")
			var targets []string
			for _, m := range inlineLink.FindAllStringSubmatch(line, -1) {
				targets = append(targets, m[1])
			}
			if m := refLink.FindStringSubmatch(line); m != nil {
				targets = append(targets, m[1])
			}
			for _, target := range targets {
				if hasScheme.MatchString(target) {
					continue
				}
				checked++
				where := fmt.Sprintf("%s:%d: link %q", file, n+1, target)
				path, frag, _ := strings.Cut(target, "#")
				dest := file
				if path != "" {
					dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
					if _, err := os.Stat(dest); err != nil {
						problems = append(problems, fmt.Sprintf("%s: %v", where, err))
						continue
					}
				}
				if frag == "" {
					continue
				}
				if !strings.HasSuffix(dest, ".md") {
					problems = append(problems, where+": a fragment into a file that is not markdown")
					continue
				}
				ids, err := anchorsOf(dest)
				if err != nil {
					problems = append(problems, fmt.Sprintf("%s: %v", where, err))
				} else if !ids[frag] {
					problems = append(problems, fmt.Sprintf("%s: %s has no heading with the id %q", where, dest, frag))
				}
			}
		}
	}
	return problems, checked
}

// TestDocsLinks: every relative link of the README and of the pages under
// docs/ resolves.
func TestDocsLinks(t *testing.T) {
	problems, checked := brokenLinks(docFiles(t))
	for _, p := range problems {
		t.Error(p)
	}
	if checked == 0 {
		t.Fatal("no relative link found: the link extraction is broken")
	}
	t.Logf("%d relative links checked", checked)
}

// TestBrokenLinksFindsBreakage: the checker tells a good link from a
// missing file, a missing heading and a fragment into a non-markdown file,
// ignores links in code and absolute URLs, and names headings as GitHub does.
func TestBrokenLinksFindsBreakage(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("page.md", "# Choices made where the spec is silent (control plane)\n\n## `max_stale` — and you\n\n## Twice\n\n## Twice\n")
	write("image.png", "png")
	readme := write("README.md", strings.Join([]string{
		"[ok](page.md) [ok](page.md#choices-made-where-the-spec-is-silent-control-plane) [ok](page.md#max_stale--and-you)",
		"[ok](page.md#twice-1) ![ok](image.png) [ok](#top) [ok](https://example.com/nowhere.md#x)",
		"`[in code](missing-in-code.md)`",
		"```",
		"[in a fence](missing-in-fence.md)",
		"```",
		"# Top",
		"[bad](missing.md)",
		"[bad](page.md#nowhere)",
		"[bad](image.png#x)",
		"[bad](#twice-2)",
		"[ref]: gone.md",
	}, "\n"))
	problems, checked := brokenLinks([]string{readme})
	if checked != 11 {
		t.Errorf("checked %d relative links, want 11", checked)
	}
	want := []string{"README.md:8: link \"missing.md\"", "README.md:9: link \"page.md#nowhere\"",
		"README.md:10: link \"image.png#x\"", "README.md:11: link \"#twice-2\"", "README.md:12: link \"gone.md\""}
	if len(problems) != len(want) {
		t.Fatalf("problems:\n%s\nwant %d", strings.Join(problems, "\n"), len(want))
	}
	for i, w := range want {
		if !strings.Contains(problems[i], w) {
			t.Errorf("problem %d is %q, want it to name %s", i+1, problems[i], w)
		}
	}
}
