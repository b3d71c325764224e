package rules

import (
	"context"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/internal/wire"
)

// Limits of the callers kept per secret.
const (
	// MaxCallersPerSecret bounds the caller IPs the store keeps per secret:
	// the newest by last seen stay, older ones are dropped at the next
	// batch that touches the secret.
	MaxCallersPerSecret = 256
	// callersPruneEvery spaces the deletions of callers past the window.
	callersPruneEvery = time.Minute
)

// SecretCallers is the callers listing of one secret.
type SecretCallers struct {
	Secret store.Secret
	// Newest is the id of the client's newest active secret ("" when it
	// has none), the one callers should move to.
	Newest string
	// Callers are the secret's callers seen within the window, the most
	// recently seen first.
	Callers []CallerStatus
	// Unlisted counts the requests whose IPs the edges did not list; nil
	// when there were none.
	Unlisted *store.Caller
}

// CallerStatus is a caller and whether it has moved to the newest secret.
type CallerStatus struct {
	store.Caller
	// OnNewest: the IP was seen on the newest active secret too. Moved: it
	// was, and has not used this secret since its first use of the newest
	// (its last use here is older). Both are false for the newest secret
	// itself.
	OnNewest, Moved bool
}

// callersSince is the oldest last-seen time that the window keeps at now;
// ok is false when the window keeps nothing.
func (s *Service) callersSince(now time.Time) (since time.Time, ok bool) {
	if s.tombstoneWindow <= 0 {
		return time.Time{}, false
	}
	return now.Add(-s.tombstoneWindow), true
}

// applyCallers records the callers of a usage batch: per (secret, caller
// IP) one write, whatever the number of requests. A batch from an edge
// that predates callers (a stamp whose secret has no callers entry) adds
// the stamp's IP as a caller of one request: that edge tells only the
// newest caller of each flush. IPs that do not parse are dropped, times
// from the future are taken as now, and counts below zero as zero; past
// MaxCallersPerSecret IPs for one secret, further ones are only counted,
// so one batch writes at most that many pairs (and the unlisted row) per
// secret.
func (s *Service) applyCallers(ctx context.Context, u wire.Usage, now time.Time) error {
	since, keep := s.callersSince(now)
	if !keep {
		return nil
	}
	type pair struct{ secret, ip string }
	uses := make(map[pair]*store.CallerUse)
	add := func(clientID, secretID, ip string, first, last time.Time, requests, refused int64) {
		if secretID == "" || clientID == "" || requests <= 0 {
			return
		}
		if ip != "" {
			a, err := netip.ParseAddr(ip)
			if err != nil {
				return
			}
			ip = a.WithZone("").Unmap().String()
		}
		last = earliest(last, now)
		first = earliest(first, last)
		if first.IsZero() || last.Before(since) {
			return
		}
		refused = min(max(refused, 0), requests)
		k := pair{secretID, ip}
		if cu := uses[k]; cu != nil {
			if cu.ClientID == clientID {
				cu.Requests += requests
				cu.Refused += refused
				cu.FirstSeen, cu.LastSeen = earliest(cu.FirstSeen, first), latest(cu.LastSeen, last)
			}
			return
		}
		uses[k] = &store.CallerUse{ClientID: clientID, SecretID: secretID, Caller: store.Caller{
			IP: ip, FirstSeen: first, LastSeen: last, Requests: requests, Refused: refused,
		}}
	}
	listed := make(map[string]int, len(u.Callers)) // IPs taken per secret
	for _, sc := range u.Callers {
		others, othersRefused := sc.OtherRequests, sc.OtherRefused
		for _, c := range sc.IPs {
			switch {
			case c.IP == "":
			case listed[sc.SecretID] >= MaxCallersPerSecret:
				// More than the store keeps: counted, not listed, so a
				// batch costs at most that many writes per secret.
				others, othersRefused = others+max(c.Requests, 0), othersRefused+max(c.Refused, 0)
			default:
				listed[sc.SecretID]++
				add(sc.ClientID, sc.SecretID, c.IP, c.FirstAt, c.LastAt, c.Requests, c.Refused)
			}
		}
		if _, ok := listed[sc.SecretID]; !ok {
			listed[sc.SecretID] = 0
		}
		if others > 0 {
			add(sc.ClientID, sc.SecretID, "", now, now, others, othersRefused)
		}
	}
	for _, st := range u.Stamps {
		if _, ok := listed[st.SecretID]; !ok && st.From != "" {
			add(st.ClientID, st.SecretID, st.From, st.LastUsedAt, st.LastUsedAt, 1, 0)
		}
	}
	if len(uses) == 0 {
		return nil
	}
	batch := make([]store.CallerUse, 0, len(uses))
	for _, cu := range uses {
		batch = append(batch, *cu)
	}
	// A stable order keeps lock order and tests deterministic.
	sort.Slice(batch, func(i, j int) bool {
		if batch[i].SecretID != batch[j].SecretID {
			return batch[i].SecretID < batch[j].SecretID
		}
		return batch[i].IP < batch[j].IP
	})
	if err := s.store.ApplyCallers(ctx, batch, MaxCallersPerSecret); err != nil {
		return err
	}
	s.pruneCallers(ctx, since)
	return nil
}

// pruneCallers deletes callers last seen before since, at most once per
// callersPruneEvery; a failure is logged and left for the next time.
func (s *Service) pruneCallers(ctx context.Context, since time.Time) {
	s.pruneMu.Lock()
	due := s.lastPrune.IsZero() || since.Sub(s.lastPrune) >= callersPruneEvery
	if due {
		s.lastPrune = since
	}
	s.pruneMu.Unlock()
	if !due {
		return
	}
	if n, err := s.store.PruneCallers(ctx, since); err != nil {
		s.logger.Warn("pruning callers past tombstone_window failed", zap.Error(err))
	} else if n > 0 {
		s.logger.Debug("callers past tombstone_window pruned", zap.Int64("callers", n))
	}
}

// newestActive returns the id of the newest active secret among secrets
// ("" when none is active).
func newestActive(secrets []store.Secret, now time.Time) string {
	newest := -1
	for i := range secrets {
		if secrets[i].Active(now) && (newest < 0 || !secrets[i].CreatedAt.Before(secrets[newest].CreatedAt)) {
			newest = i
		}
	}
	if newest < 0 {
		return ""
	}
	return secrets[newest].ID
}

// ListCallers returns a secret's callers seen within tombstone_window,
// and per caller whether it has moved to the client's newest secret.
// Owners of the client may read it.
func (s *Service) ListCallers(ctx context.Context, who Actor, clientID, secretID string) (SecretCallers, error) {
	if !validSecretID(secretID) {
		return SecretCallers{}, invalidf("secret id must be %s followed by %d base62 characters", secretIDPrefix, idRandLen)
	}
	if _, err := s.VisibleClient(ctx, who, clientID); err != nil {
		return SecretCallers{}, err
	}
	secrets, err := s.store.Secrets(ctx, clientID)
	if err != nil {
		return SecretCallers{}, err
	}
	i := slices.IndexFunc(secrets, func(sec store.Secret) bool { return sec.ID == secretID })
	if i < 0 {
		return SecretCallers{}, store.ErrNotFound
	}
	now := s.Now()
	out := SecretCallers{Secret: secrets[i], Newest: newestActive(secrets, now), Callers: []CallerStatus{}}
	since, keep := s.callersSince(now)
	if !keep {
		return out, nil
	}
	ids := []string{secretID}
	if out.Newest != "" && out.Newest != secretID {
		ids = append(ids, out.Newest)
	}
	callers, err := s.store.Callers(ctx, ids, since)
	if err != nil {
		return SecretCallers{}, err
	}
	onNewest := make(map[string]store.Caller)
	if out.Newest != secretID {
		for _, c := range callers[out.Newest] {
			onNewest[c.IP] = c
		}
	}
	for _, c := range callers[secretID] {
		if c.IP == "" {
			unlisted := c
			out.Unlisted = &unlisted
			continue
		}
		st := CallerStatus{Caller: c}
		if n, ok := onNewest[c.IP]; ok {
			st.OnNewest = true
			st.Moved = c.LastSeen.Before(n.FirstSeen)
		}
		out.Callers = append(out.Callers, st)
	}
	return out, nil
}

// NetworkSuggestion is what SuggestNetworks proposes.
type NetworkSuggestion struct {
	// CIDRs is the smallest set of prefixes covering exactly the callers
	// (SuggestNetworks).
	CIDRs []string
	// Callers is how many distinct caller IPs it covers.
	Callers int
	// Unlisted counts requests of the client's active secrets whose IPs
	// the edges did not list: when it is not zero, the suggestion may miss
	// callers.
	Unlisted int64
}

// SuggestNetworks proposes allowed networks for a client from the callers
// of its active secrets seen within `within` (0: all of tombstone_window;
// never more). Nothing is saved. Owners of the client may ask.
func (s *Service) SuggestNetworks(ctx context.Context, who Actor, clientID string, within time.Duration) (NetworkSuggestion, error) {
	out := NetworkSuggestion{CIDRs: []string{}}
	if within < 0 {
		return out, invalidf("within must not be negative")
	}
	if _, err := s.VisibleClient(ctx, who, clientID); err != nil {
		return out, err
	}
	secrets, err := s.store.Secrets(ctx, clientID)
	if err != nil {
		return out, err
	}
	now := s.Now()
	since, keep := s.callersSince(now)
	if !keep {
		return out, nil
	}
	if within > 0 {
		since = latest(since, now.Add(-within))
	}
	var ids []string
	for _, sec := range secrets {
		if sec.Active(now) {
			ids = append(ids, sec.ID)
		}
	}
	if len(ids) == 0 {
		return out, nil
	}
	callers, err := s.store.Callers(ctx, ids, since)
	if err != nil {
		return out, err
	}
	var ips []string
	for _, list := range callers {
		for _, c := range list {
			if c.IP == "" {
				out.Unlisted += c.Requests
				continue
			}
			ips = append(ips, c.IP)
		}
	}
	slices.Sort(ips)
	ips = slices.Compact(ips)
	out.CIDRs, out.Callers = SuggestNetworks(ips), len(ips)
	return out, nil
}

// SetNetworks replaces a client's allowed networks (canonicalised by
// NormalizeCIDRs; empty: anywhere) and report-only mode, and returns the
// client. It changes the snapshot, so edges enforce it within
// revocation_delay. Owners of the client may set them.
func (s *Service) SetNetworks(ctx context.Context, who Actor, clientID string, cidrs []string, reportOnly bool) (c store.Client, err error) {
	defer func() {
		s.log(who, "client.networks", clientID, "", err, zap.Strings("allowed_cidrs", c.AllowedCIDRs), zap.Bool("report_only", c.NetworksReportOnly))
	}()
	if err := ValidateClientID(clientID); err != nil {
		return store.Client{}, invalidError(err.Error())
	}
	if cidrs, err = NormalizeCIDRs(cidrs); err != nil {
		return store.Client{}, err
	}
	c, err = update(ctx, s, func(tx store.Tx) (store.Client, error) {
		c, err := lockManaged(ctx, tx, who, clientID)
		if err != nil {
			return store.Client{}, err
		}
		if slices.Equal(c.AllowedCIDRs, cidrs) && c.NetworksReportOnly == reportOnly {
			return c, nil
		}
		c.AllowedCIDRs, c.NetworksReportOnly = cidrs, reportOnly
		if err := tx.SetNetworks(ctx, clientID, cidrs, reportOnly); err != nil {
			return store.Client{}, err
		}
		return c, s.record(ctx, tx, who, "client.networks", clientID, "", networksDetail(cidrs, reportOnly))
	})
	if err != nil {
		return store.Client{}, err
	}
	return c, nil
}

func networksDetail(cidrs []string, reportOnly bool) string {
	d := "allowed: anywhere"
	if len(cidrs) > 0 {
		d = "allowed: " + strings.Join(cidrs, ", ")
	}
	if reportOnly {
		d += " (report only)"
	}
	return d
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func latest(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
