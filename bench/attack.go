package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// attackerIP is the attacker's source address: loopback, but not the good
// client's 127.0.0.1, so that per-IP failure budgets can tell them apart.
var attackerIP = net.IPv4(127, 0, 0, 2)

// attackTally counts the attacker's answers by status, and the requests
// that got no answer (the server closed the connection, or a timeout).
// Accepted counts the 2xx among Other: a wrong secret let through.
type attackTally struct {
	Unauthorized, TooMany, Other, Errors int64
	Accepted                             int64
	Duration                             time.Duration
}

func (a attackTally) answered() int64 { return a.Unauthorized + a.TooMany + a.Other }

// RPS is the answers (of any status) per second of the attack.
func (a attackTally) RPS() float64 { return float64(a.answered()) / a.Duration.Seconds() }

func (a attackTally) add(b attackTally) attackTally {
	return attackTally{
		Unauthorized: a.Unauthorized + b.Unauthorized, TooMany: a.TooMany + b.TooMany,
		Other: a.Other + b.Other, Errors: a.Errors + b.Errors, Accepted: a.Accepted + b.Accepted,
		Duration: a.Duration + b.Duration,
	}
}

func (a attackTally) String() string {
	return fmt.Sprintf("401:%d 429:%d other:%d no-answer:%d", a.Unauthorized, a.TooMany, a.Other, a.Errors)
}

// attack is a closed-loop attacker in this process (wrk cannot choose its
// source address): conns keep-alive connections from attackerIP, each
// sending GET target with Basic credentials for user and a wrong secret
// never sent before, the next as soon as the last is answered. An answer
// held by the server for seconds is waited for (up to 30s); a connection
// the server closes is dialled again, and the attack goes on.
type attack struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	start  time.Time

	unauthorized, tooMany, other, errs, accepted atomic.Int64
}

// startAttack runs the attack until stop is called.
func startAttack(ctx context.Context, target, user string, conns int) (*attack, error) {
	if err := loopbackOnly(target); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	a := &attack{cancel: cancel, start: time.Now()}
	prefix := "wrong-" + randToken()[:12] + "-"
	for i := range conns {
		client := attackClient()
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer client.CloseIdleConnections()
			for n := 0; ctx.Err() == nil; n++ {
				code, err := attackOnce(ctx, client, target, basicAuth(user, fmt.Sprintf("%s%d-%d", prefix, i, n)))
				switch {
				case ctx.Err() != nil: // stopped mid-request: not counted
				case err != nil:
					a.errs.Add(1)
					// Do not spin if the server is gone; a close is
					// followed by a fresh dial on the next request.
					time.Sleep(10 * time.Millisecond)
				case code == http.StatusUnauthorized:
					a.unauthorized.Add(1)
				case code == http.StatusTooManyRequests:
					a.tooMany.Add(1)
				default:
					a.other.Add(1)
					if code >= 200 && code < 300 {
						a.accepted.Add(1)
					}
				}
			}
		}()
	}
	return a, nil
}

// attackClient holds one connection at a time, dialled from attackerIP.
func attackClient() *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: attackerIP}, Timeout: 5 * time.Second}
	return &http.Client{
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         d.DialContext,
			MaxConnsPerHost:     1,
			MaxIdleConnsPerHost: 1,
			DisableCompression:  true,
		},
		Timeout: 30 * time.Second,
	}
}

// attackOnce sends one request and returns its status once the answer's
// body is read (or cut off: the status came all the same).
func attackOnce(ctx context.Context, client *http.Client, target, auth string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", auth)
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// stop ends the attack (in-flight requests are abandoned and not counted)
// and returns its tally.
func (a *attack) stop() attackTally {
	a.cancel()
	a.wg.Wait()
	return attackTally{
		Unauthorized: a.unauthorized.Load(), TooMany: a.tooMany.Load(),
		Other: a.other.Load(), Errors: a.errs.Load(), Accepted: a.accepted.Load(), Duration: time.Since(a.start),
	}
}

// probeAttack sends one wrong secret from attackerIP and returns the status.
func probeAttack(ctx context.Context, target, user string) (int, error) {
	if err := loopbackOnly(target); err != nil {
		return 0, err
	}
	client := attackClient()
	defer client.CloseIdleConnections()
	return attackOnce(ctx, client, target, basicAuth(user, "wrong-probe-"+randToken()[:12]))
}
