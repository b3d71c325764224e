package cli

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"text/tabwriter"

	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/spf13/cobra"
)

// `caddy client-credentials events list`: the events sent to webhooks,
// from GET /v1/events.

func init() {
	AddCommand(func(root *cobra.Command) { root.AddCommand(eventsCommand()) })
}

func eventsCommand() *cobra.Command {
	c := &cobra.Command{Use: "events", Short: "Lists the events sent to webhooks"}
	list := command("list", "Lists recent events, newest first, and where their webhook deliveries stand", func(cmd *cobra.Command, _ []string) error {
		limit, _ := cmd.Flags().GetInt("limit")
		q := url.Values{}
		if limit != 0 {
			q.Set("limit", strconv.Itoa(limit))
		}
		path := "/v1/events"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		var out api.EventList
		return run(cmd, http.MethodGet, path, nil, &out, func(w io.Writer) { printEvents(w, out.Events) })
	})
	list.Flags().Int("limit", 0, fmt.Sprintf("how many events (default %d, at most %d)", rules.DefaultEventsLimit, rules.MaxPageSize))
	c.AddCommand(list)
	return c
}

// printEvents writes the table of `events list`: one line per event, its
// deliveries summed up as webhook=state[/attempts].
func printEvents(w io.Writer, evs []api.Event) {
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
			api.FormatTime(&e.CreatedAt, "-"), delivery)
	}
	tw.Flush()
}
