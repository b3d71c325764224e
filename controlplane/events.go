package controlplane

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/spf13/cobra"
)

// The event listing: GET /v1/events (admins) and `caddy
// client-credentials events list`.

func init() {
	AddCLICommand(func(root *cobra.Command) { root.AddCommand(eventsCommand()) })
}

type eventListJSON struct {
	Events []eventJSON `json:"events"`
}

type eventJSON struct {
	ID         string         `json:"id"`
	Type       string         `json:"type"`
	ClientID   string         `json:"client_id"`
	SecretID   string         `json:"secret_id,omitempty"`
	CreatedAt  time.Time      `json:"created_at"`
	Deliveries []deliveryJSON `json:"deliveries"`
}

type deliveryJSON struct {
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
	out := eventListJSON{Events: make([]eventJSON, 0, len(evs))}
	for _, e := range evs {
		ej := eventJSON{ID: e.ID, Type: e.Type, ClientID: e.ClientID, SecretID: e.SecretID, CreatedAt: e.CreatedAt,
			Deliveries: make([]deliveryJSON, 0, len(e.Deliveries))}
		for _, d := range e.Deliveries {
			dj := deliveryJSON{Webhook: d.Webhook, State: d.State(), Attempts: d.Attempts,
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

func eventsCommand() *cobra.Command {
	c := &cobra.Command{Use: "events", Short: "Lists the events sent to webhooks"}
	list := &cobra.Command{
		Use:   "list",
		Short: "Lists recent events, newest first, and where their webhook deliveries stand",
		Args:  namedArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			limit, _ := cmd.Flags().GetInt("limit")
			q := url.Values{}
			if limit != 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			path := "/v1/events"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			var out eventListJSON
			return run(cmd, http.MethodGet, path, nil, &out, func(w io.Writer) { printEvents(w, out.Events) })
		},
	}
	list.Flags().Int("limit", 0, fmt.Sprintf("how many events (default %d, at most %d)", rules.DefaultEventsLimit, rules.MaxPageSize))
	c.AddCommand(list)
	return c
}

// printEvents writes the table of `events list`: one line per event, its
// deliveries summed up as webhook=state[/attempts].
func printEvents(w io.Writer, evs []eventJSON) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTYPE\tCLIENT\tSECRET\tCREATED\tDELIVERY")
	for _, e := range evs {
		delivery := "no webhook"
		for i, d := range e.Deliveries {
			s := d.Webhook + "=" + d.State
			if d.State != "delivered" || d.Attempts > 1 {
				s += fmt.Sprintf(" (%d attempts", d.Attempts)
				if d.LastError != "" {
					s += ", last: " + d.LastError
				}
				s += ")"
			}
			if i == 0 {
				delivery = s
			} else {
				delivery += "; " + s
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.ID, e.Type, orDash(e.ClientID), orDash(e.SecretID),
			fmtTime(&e.CreatedAt, "-"), delivery)
	}
	tw.Flush()
}
