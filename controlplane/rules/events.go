package rules

import (
	"context"

	"github.com/rotagate/rotagate/controlplane/store"
)

// DefaultEventsLimit is how many events a listing shows unless asked.
const DefaultEventsLimit = 50

// ListEvents returns the newest limit events with where their deliveries
// stand (admins only); limit 0 means DefaultEventsLimit. Deliveries name
// their webhook by its URL's host when it is configured here, else by its
// key (a webhook since removed, or configured on another replica only).
func (s *Service) ListEvents(ctx context.Context, who Actor, limit int) ([]store.EventRecord, error) {
	if !who.Admin {
		return nil, ErrForbidden
	}
	if limit == 0 {
		limit = DefaultEventsLimit
	}
	if limit < 1 || limit > MaxPageSize {
		return nil, invalidf("limit must be between 1 and %d", MaxPageSize)
	}
	ob, ok := s.store.(store.OutboxStore)
	if !ok {
		return []store.EventRecord{}, nil
	}
	evs, err := ob.Events(ctx, limit)
	if err != nil {
		return nil, err
	}
	labels := map[string]string{}
	for _, w := range s.hooks {
		labels[w.Key()] = w.Label()
	}
	for i := range evs {
		for j := range evs[i].Deliveries {
			if l, ok := labels[evs[i].Deliveries[j].Webhook]; ok {
				evs[i].Deliveries[j].Webhook = l
			}
		}
	}
	return evs, nil
}
