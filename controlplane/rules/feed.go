package rules

import (
	"context"
	"net/netip"
	"sort"
	"time"

	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/internal/wire"
)

// What the feed reads, and the usage edges report.

// WriteSnapshot hands the feed's view of the store to w as it is read
// (Store.Snapshot): every active secret's hash and the tombstones, by
// client, the head stamped with the service clock.
func (s *Service) WriteSnapshot(ctx context.Context, w store.SnapshotWriter) error {
	now := s.Now()
	return s.store.Snapshot(ctx, now, s.tombstoneWindow, stamped{w, now})
}

// Snapshot returns the feed's view of the store whole, as WriteSnapshot
// writes it.
func (s *Service) Snapshot(ctx context.Context) (wire.Snapshot, error) {
	var c store.Collect
	if err := s.WriteSnapshot(ctx, &c); err != nil {
		return wire.Snapshot{}, err
	}
	return c.Snapshot, nil
}

// stamped sets the generation time of the snapshot it passes on.
type stamped struct {
	store.SnapshotWriter
	now time.Time
}

func (w stamped) Begin(head wire.Snapshot) error {
	head.GeneratedAt = w.now
	return w.SnapshotWriter.Begin(head)
}

// Changes returns the feed's changes since a revision (Store.Changes),
// with tombstones, stamped with the service clock; ok is false when the
// feed must answer with a full snapshot.
func (s *Service) Changes(ctx context.Context, since int64) (wire.Delta, bool, error) {
	now := s.Now()
	d, ok, err := s.store.Changes(ctx, since, now, s.tombstoneWindow)
	if err != nil || !ok {
		return wire.Delta{}, false, err
	}
	d.GeneratedAt = now
	return d, true, nil
}

// ApplyUsage records a batch of last-used stamps, then its
// presented-after-revoke reports (ApplyRevokedUses). Stamps are merged per
// secret first (newest wins), so the store does one write per distinct
// secret. Stamps from the future are recorded as now, so a skewed edge
// clock cannot pin last_used_at ahead of time; a from that is not an IP
// address is dropped. Then the batch's callers are added (applyCallers):
// one write per (secret, caller IP), and a cut-over pass is asked for
// (KickCutover). It returns how many secrets' last use moved.
func (s *Service) ApplyUsage(ctx context.Context, u wire.Usage) (int, error) {
	now := s.Now()
	newest := make(map[string]wire.Stamp, len(u.Stamps))
	for _, st := range u.Stamps {
		if st.SecretID == "" || st.ClientID == "" || st.LastUsedAt.IsZero() {
			continue
		}
		if st.LastUsedAt.After(now) {
			st.LastUsedAt = now
		}
		st.From = cleanIP(st.From)
		if cur, ok := newest[st.SecretID]; !ok || st.LastUsedAt.After(cur.LastUsedAt) {
			newest[st.SecretID] = st
		}
	}
	stamps := make([]wire.Stamp, 0, len(newest))
	for _, st := range newest {
		stamps = append(stamps, st)
	}
	// A stable order keeps lock order and tests deterministic.
	sort.Slice(stamps, func(i, j int) bool { return stamps[i].SecretID < stamps[j].SecretID })
	n, err := s.store.ApplyUsage(ctx, stamps)
	if err != nil {
		return 0, err
	}
	// After the stamps, which are idempotent: a failure here has the
	// edge send the whole batch again, and counts are not.
	if _, err := s.ApplyRevokedUses(ctx, u.Edge, u.RevokedUses); err != nil {
		return 0, err
	}
	if err := s.applyCallers(ctx, u, now); err != nil {
		return n, err
	}
	s.KickCutover()
	return n, nil
}

// cleanIP returns an IP address in its canonical form (IPv4-mapped made
// IPv4), or "" for anything that is not one.
func cleanIP(from string) string {
	addr, err := netip.ParseAddr(from)
	if err != nil {
		return ""
	}
	return addr.Unmap().String()
}
