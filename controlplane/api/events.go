package api

import (
	"net/http"
	"time"

	"github.com/rotagate/rotagate/controlplane/rules"
)

// The event listing: GET /v1/events (admins).

type EventList struct {
	Events []Event `json:"events"`
}

type Event struct {
	ID         string     `json:"id"`
	Type       string     `json:"type"`
	ClientID   string     `json:"client_id"`
	SecretID   string     `json:"secret_id,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	Deliveries []Delivery `json:"deliveries"`
}

type Delivery struct {
	Webhook       string     `json:"webhook"`
	State         string     `json:"state"`
	Attempts      int        `json:"attempts"`
	NextAttemptAt *time.Time `json:"next_attempt_at,omitempty"`
	DeliveredAt   *time.Time `json:"delivered_at,omitempty"`
	FailedAt      *time.Time `json:"failed_at,omitempty"`
	LastError     string     `json:"last_error,omitempty"`
}

func (a *API) listEvents(r *http.Request, who rules.Actor) (any, error) {
	limit, err := limitParam(r)
	if err != nil {
		return nil, err
	}
	evs, err := a.svc.ListEvents(r.Context(), who, limit)
	if err != nil {
		return nil, err
	}
	out := EventList{Events: make([]Event, 0, len(evs))}
	for _, e := range evs {
		ej := Event{ID: e.ID, Type: e.Type, ClientID: e.ClientID, SecretID: e.SecretID, CreatedAt: e.CreatedAt,
			Deliveries: make([]Delivery, 0, len(e.Deliveries))}
		for _, d := range e.Deliveries {
			dj := Delivery{Webhook: d.Webhook, State: d.State(), Attempts: d.Attempts,
				DeliveredAt: d.DeliveredAt, FailedAt: d.FailedAt, LastError: d.LastError}
			if dj.State == "pending" {
				next := d.NextAttemptAt
				dj.NextAttemptAt = &next
			}
			ej.Deliveries = append(ej.Deliveries, dj)
		}
		out.Events = append(out.Events, ej)
	}
	return out, nil
}
