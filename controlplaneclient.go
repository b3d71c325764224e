package rotagate

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// controlPlaneClient makes the edge's requests of the control plane: the
// snapshot polls and the usage POSTs alike. A request goes to each
// configured URL in turn until one answers, carries the edge token, and
// follows no redirect (docs/design.md §4): a 3xx other than 304 is a failed request,
// so the token is only ever sent to the configured URLs.
type controlPlaneClient struct {
	urls   []string
	token  string
	label  string // the control_plane label of the metrics
	http   *http.Client
	logger *zap.Logger

	mu sync.Mutex
	// redirecting holds the URLs whose redirect was logged: one warning
	// per URL, until it answers something else, not one per retry.
	redirecting map[string]bool
}

func newControlPlaneClient(urls []string, token string, logger *zap.Logger) *controlPlaneClient {
	return &controlPlaneClient{
		urls:  urls,
		token: token,
		label: controlPlaneLabel(urls),
		http: &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}},
		logger:      logger,
		redirecting: make(map[string]bool),
	}
}

// cpRequest is one request of the control plane, sent to each URL in turn.
type cpRequest struct {
	method  string
	path    string // after the base URL, query included
	header  http.Header
	body    []byte
	timeout time.Duration // of each try
}

// answerFunc reads a control plane's answer, never a redirect; sent is
// when the request went out. It returns nil when it takes the answer.
type answerFunc func(resp *http.Response, sent time.Time) error

// finalAnswer is implemented by answer errors that every replica of the
// store would repeat (the request itself was refused): the next URL is not
// tried.
type finalAnswer interface{ final() }

// do sends req to the first URL, then to the next while the answer is not
// taken, and returns nil as soon as one is; otherwise every URL's error.
func (c *controlPlaneClient) do(ctx context.Context, req cpRequest, answer answerFunc) error {
	var errs []error
	for _, base := range c.urls {
		err := c.try(ctx, base, req, answer)
		if err == nil {
			return nil
		}
		var fa finalAnswer
		if errors.As(err, &fa) {
			return err
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return errors.Join(errs...)
}

// try makes req of one URL. Its errors name the URL, which carries no
// secret.
func (c *controlPlaneClient) try(ctx context.Context, base string, req cpRequest, answer answerFunc) error {
	ctx, cancel := context.WithTimeout(ctx, req.timeout)
	defer cancel()
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	r, err := http.NewRequestWithContext(ctx, req.method, strings.TrimSuffix(base, "/")+req.path, body)
	if err != nil {
		return fmt.Errorf("%s: %w", base, stripURLError(err))
	}
	maps.Copy(r.Header, req.header)
	r.Header.Set("Authorization", "Bearer "+c.token)
	sent := time.Now()
	resp, err := c.http.Do(r)
	if err != nil {
		return fmt.Errorf("%s: %w", base, stripURLError(err))
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096)) // lets the connection be reused
		resp.Body.Close()
	}()
	if isRedirect(resp.StatusCode) {
		c.redirected(base, resp)
		return fmt.Errorf("%s: answered %d, a redirect, which the edge does not follow", base, resp.StatusCode)
	}
	c.mu.Lock()
	delete(c.redirecting, base)
	c.mu.Unlock()
	if err := answer(resp, sent); err != nil {
		return fmt.Errorf("%s: %w", base, err)
	}
	return nil
}

func isRedirect(status int) bool {
	return status/100 == 3 && status != http.StatusNotModified
}

// redirected warns, once per URL until it answers something else, that
// the URL redirects. It names the origin the redirect points to (a URL
// moved to https, say), never the rest of the location.
func (c *controlPlaneClient) redirected(base string, resp *http.Response) {
	c.mu.Lock()
	logged := c.redirecting[base]
	c.redirecting[base] = true
	c.mu.Unlock()
	if logged {
		return
	}
	to := "nowhere (no Location)"
	if loc, err := resp.Location(); err == nil {
		to = loc.Scheme + "://" + loc.Host
	}
	c.logger.Warn("the control plane answers with a redirect, which the edge does not follow (its token goes to the configured URLs only); fix the control_plane URL",
		zap.String("url", base), zap.Int("status", resp.StatusCode), zap.String("redirects_to", to))
}

// stripURLError drops the URL from a client error: the URL carries no
// secret, but the error is logged and the base URL is already named.
func stripURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}
