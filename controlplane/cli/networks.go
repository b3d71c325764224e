package cli

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/rules"
)

// networksCommand is `client networks`: show, set, clear or suggest a
// client's allowed networks, and switch report-only mode.
func networksCommand() *cobra.Command {
	c := clientResourceCommand("networks", "Shows or sets the networks a client may call from (--set, --clear, --report-only, --enforce), or suggests them (--suggest)",
		`Shows or sets the networks a client may call from. With no flag it prints
them, one CIDR per line (nothing: anywhere). --set replaces them with a
comma-separated list of CIDR prefixes or addresses; --clear allows anywhere.
--report-only records calls from outside without refusing them; --enforce
refuses them (the default for a client). Without a mode flag, the mode stays
as it is. --suggest prints the smallest set of networks covering the callers
of the client's active secrets seen within --within (default: the control
plane's tombstone_window), without saving it.`,
		func(cmd *cobra.Command, clientID, path string) error {
			set, _ := cmd.Flags().GetStringSlice("set")
			clear, _ := cmd.Flags().GetBool("clear")
			reportOnly, _ := cmd.Flags().GetBool("report-only")
			enforce, _ := cmd.Flags().GetBool("enforce")
			suggest, _ := cmd.Flags().GetBool("suggest")
			within, _ := cmd.Flags().GetString("within")
			setting := cmd.Flags().Changed("set") || clear
			switch {
			case cmd.Flags().Changed("set") && clear:
				return errors.New("give --set or --clear, not both")
			case reportOnly && enforce:
				return errors.New("give --report-only or --enforce, not both")
			case suggest && (setting || reportOnly || enforce):
				return errors.New("--suggest saves nothing: give it alone (and --within)")
			case within != "" && !suggest:
				return errors.New("--within goes with --suggest")
			}
			if suggest {
				req := api.SuggestRequest{}
				if within != "" {
					req.Within = &within
				}
				var out api.Suggestion
				return run(cmd, http.MethodPost, path+"/suggest", req, &out, func(w io.Writer) {
					printCIDRs(w, out.AllowedCIDRs)
					fmt.Fprintf(cmd.ErrOrStderr(), "covers the %s seen; not saved (apply with: client networks %s --set %s)\n",
						rules.Plural(int64(out.Callers), "caller IP", "caller IPs"), clientID, orDash(strings.Join(out.AllowedCIDRs, ",")))
					if out.UnlistedRequests > 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "warning: %d requests came from IPs the edges did not list one by one (over 64 per secret per flush); these networks may miss callers\n", out.UnlistedRequests)
					}
				})
			}
			var cur api.Networks
			if !setting && !reportOnly && !enforce {
				return run(cmd, http.MethodGet, path, nil, &cur, func(w io.Writer) { printNetworks(cmd, w, clientID, cur) })
			}
			if err := call(cmd, http.MethodGet, path, nil, &cur); err != nil {
				return err
			}
			req := api.PutNetworksRequest{AllowedCIDRs: &cur.AllowedCIDRs, ReportOnly: cur.ReportOnly}
			if setting {
				cidrs := set
				if clear {
					cidrs = []string{}
				}
				req.AllowedCIDRs = &cidrs
			}
			if reportOnly || enforce {
				req.ReportOnly = reportOnly
			}
			var out api.Networks
			return run(cmd, http.MethodPut, path, req, &out, func(w io.Writer) { printNetworks(cmd, w, clientID, out) })
		})
	c.Flags().StringSlice("set", nil, "allowed networks, comma-separated CIDR prefixes or addresses (e.g. 10.0.0.0/8,2001:db8::/32)")
	c.Flags().Bool("clear", false, "allow the client from anywhere")
	c.Flags().Bool("report-only", false, "record calls from outside the networks without refusing them")
	c.Flags().Bool("enforce", false, "refuse calls from outside the networks")
	c.Flags().Bool("suggest", false, "print networks covering the callers seen, without saving them")
	c.Flags().String("within", "", "with --suggest: only callers seen within this Go duration (e.g. 168h)")
	return c
}

func printCIDRs(w io.Writer, cidrs []string) {
	for _, c := range cidrs {
		fmt.Fprintln(w, c)
	}
}

func printNetworks(cmd *cobra.Command, w io.Writer, clientID string, n api.Networks) {
	printCIDRs(w, n.AllowedCIDRs)
	mode := "enforced"
	if n.ReportOnly {
		mode = "report only: calls from outside are recorded, not refused"
	}
	if len(n.AllowedCIDRs) == 0 {
		fmt.Fprintf(cmd.ErrOrStderr(), "client %s may call from anywhere\n", clientID)
		return
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "client %s may call from %s (%s)\n", clientID, rules.Plural(int64(len(n.AllowedCIDRs)), "network", "networks"), mode)
}

// callersCommand is `secret callers`.
func callersCommand() *cobra.Command {
	return command("callers <client_id> <secret_id>", "Lists the caller IPs of a secret, and whether each has moved to the newest secret", func(cmd *cobra.Command, args []string) error {
		var out api.Callers
		path := clientPath(args[0]) + "/secrets/" + url.PathEscape(args[1]) + "/callers"
		return run(cmd, http.MethodGet, path, nil, &out, func(w io.Writer) {
			printCallers(w, out)
			newest := "none active"
			if out.NewestSecretID != nil {
				newest = *out.NewestSecretID
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "callers of %s seen within %s; newest secret: %s\n", out.SecretID, out.Window, newest)
		})
	})
}

// printCallers writes the table of `secret callers`. NEWEST SECRET says
// for each caller of an older secret whether it has moved: "moved" (uses
// the newest secret, and has not used this one since), "uses both", or
// "not yet"; "-" on the newest secret itself.
func printCallers(w io.Writer, out api.Callers) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CALLER IP\tFIRST SEEN\tLAST SEEN\tREQUESTS\tREFUSED\tNEWEST SECRET")
	row := func(ip string, c api.Caller, newest string) {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\n", ip, api.FormatTime(&c.FirstSeen, "-"), api.FormatTime(&c.LastSeen, "-"), c.Requests, c.Refused, newest)
	}
	for _, c := range out.Callers {
		newest := "-"
		switch {
		case c.Moved != nil && *c.Moved:
			newest = "moved"
		case c.OnNewest != nil && *c.OnNewest:
			newest = "uses both"
		case c.OnNewest != nil:
			newest = "not yet"
		}
		row(c.IP, c, newest)
	}
	if out.Unlisted != nil {
		row("(other IPs)", *out.Unlisted, "-")
	}
	tw.Flush()
}
