package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Profiles of Caddy under load (-profile): for each case listed, one run
// of -duration with Caddy's CPU profile and its allocations (a delta
// profile) taken from its admin endpoint while the good client runs, so
// that what the handler costs Caddy — its own frames, and the garbage
// collection and Caddy frames it causes — can be read with `go tool pprof`.

// pprofKinds are the admin endpoint's profiles taken, and the name each
// is saved under.
var pprofKinds = [...]struct{ endpoint, file string }{{"profile", "cpu"}, {"allocs", "allocs"}}

func (lr *loadRun) profileCases(cs []contender) error {
	byKey := map[string]contender{}
	for _, ct := range cs {
		byKey[ct.key] = ct
	}
	if err := os.MkdirAll(lr.s.profileDir, 0o755); err != nil {
		return err
	}
	fmt.Printf("## Profiles: %s per case, Caddy's CPU and allocations while the good client runs\n\n", lr.s.duration)
	for _, key := range strings.Split(lr.s.profile, ",") {
		ct, ok := byKey[strings.TrimSpace(key)]
		if !ok {
			return fmt.Errorf("-profile: unknown case %q", key)
		}
		if err := lr.profileCase(ct); err != nil {
			return err
		}
	}
	fmt.Println()
	return nil
}

// profileCase runs ct once for -duration, taking the profiles for all of
// it but its last second, and reports Caddy's CPU time per request.
func (lr *loadRun) profileCase(ct contender) error {
	secs := max(1, int(lr.s.duration/time.Second)-1)
	type fetched struct {
		file string
		body []byte
		err  error
	}
	got := make(chan fetched, len(pprofKinds))
	s, err := lr.runCaseWith(ct, lr.s.duration, func() {
		for _, k := range pprofKinds {
			go func() {
				body, err := lr.fetchProfile(k.endpoint, secs)
				got <- fetched{k.file, body, err}
			}()
		}
	})
	var files []string
	for range pprofKinds {
		f := <-got
		if f.err != nil {
			if err == nil {
				err = f.err
			}
			continue
		}
		path := filepath.Join(lr.s.profileDir, fmt.Sprintf("caddy-%s.%s.pprof", ct.key, f.file))
		if werr := os.WriteFile(path, f.body, 0o644); werr != nil && err == nil {
			err = werr
		}
		files = append(files, path)
	}
	if err != nil {
		return fmt.Errorf("(%s) profile: %w", ct.key, err)
	}
	fmt.Printf("(%s) %.0f req/s, %.2f µs of Caddy CPU per request, Caddy's share of its core %.2f: %s\n",
		ct.key, s.good.RPS(), s.cpu.Seconds()/float64(s.good.Requests)*1e6, s.cpuShare(), strings.Join(files, ", "))
	return nil
}

// fetchProfile takes one profile of secs seconds from Caddy's admin
// endpoint.
func (lr *loadRun) fetchProfile(endpoint string, secs int) ([]byte, error) {
	u := fmt.Sprintf("%s/debug/pprof/%s?seconds=%d", lr.admin, endpoint, secs)
	if err := loopbackOnly(u); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(lr.ctx, time.Duration(secs)*time.Second+30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %d %s", endpoint, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	return body, err
}
