package cli

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/rotagate/rotagate/controlplane/api"
)

// cutoverCommand is `client cutover`: show or set a client's cut-over
// policy, and show where its rotation stands.
func cutoverCommand() *cobra.Command {
	c := clientResourceCommand("cutover", "Shows or sets when an old secret is revoked by itself (--auto, --manual, --quiet, --lookback, --deadline, --on-deadline)",
		`Shows or sets a client's cut-over policy, then prints it and the state of
each older active secret: which callers have not moved to the newest secret
yet, and when it will be quiet or stall. --auto revokes an older secret once
every caller has moved and it has been quiet for --quiet; --manual only
shows the state. Durations take Go's form or d for days ("14d"). A flag not
given leaves that field as it is.`,
		func(cmd *cobra.Command, clientID, path string) error {
			auto, _ := cmd.Flags().GetBool("auto")
			manual, _ := cmd.Flags().GetBool("manual")
			if auto && manual {
				return errors.New("give --auto or --manual, not both")
			}
			var req api.PutCutoverRequest
			if auto || manual {
				req.Auto = &auto
			}
			for _, f := range []struct {
				flag string
				to   **string
			}{{"quiet", &req.Quiet}, {"lookback", &req.Lookback}, {"deadline", &req.Deadline}, {"on-deadline", &req.OnDeadline}} {
				if cmd.Flags().Changed(f.flag) {
					v, _ := cmd.Flags().GetString(f.flag)
					*f.to = &v
				}
			}
			var out api.Cutover
			show := func(w io.Writer) { printCutover(w, out) }
			if req == (api.PutCutoverRequest{}) {
				return run(cmd, http.MethodGet, path, nil, &out, show)
			}
			return run(cmd, http.MethodPut, path, req, &out, show)
		})
	c.Flags().Bool("auto", false, "revoke an older secret once every caller has moved to the newest")
	c.Flags().Bool("manual", false, "never revoke by itself; only show the state")
	c.Flags().String("quiet", "", "how long the older secret must go unused (e.g. 1h)")
	c.Flags().String("lookback", "", "how far back a caller of the older secret must move (e.g. 14d)")
	c.Flags().String("deadline", "", "when an unfinished rotation stalls, from the newest secret's creation (e.g. 7d; 0: never)")
	c.Flags().String("on-deadline", "", "keep or revoke the older secret at the deadline")
	return c
}

// printCutover writes a client's cut-over policy and rotation state.
func printCutover(w io.Writer, c api.Cutover) {
	auto := "off (manual)"
	if c.Auto {
		auto = "on"
	}
	fmt.Fprintf(w, "auto:        %s\nquiet:       %s\nlookback:    %s\ndeadline:    %s\non_deadline: %s\n",
		auto, c.Quiet, c.Lookback, c.Deadline, c.OnDeadline)
	printCutoverState(w, c)
}

// printCutoverState writes one line per older active secret, or that no
// rotation is in progress.
func printCutoverState(w io.Writer, c api.Cutover) {
	if len(c.Secrets) == 0 {
		fmt.Fprintln(w, "cut-over:    no rotation in progress")
		return
	}
	for _, s := range c.Secrets {
		fmt.Fprintf(w, "cut-over:    %s %s\n", s.SecretID, s.Summary(c.Auto))
	}
}
