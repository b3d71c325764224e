package controlplane

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/spf13/cobra"
)

// Defaults of the command line.
const (
	// DefaultAPIURL is where the CLI finds the management API unless
	// --api or ROTAGATE_API says otherwise.
	DefaultAPIURL = "http://127.0.0.1:9180"
	// EnvAdminToken holds the admin token when --token is not given.
	EnvAdminToken = "ROTAGATE_ADMIN_TOKEN"
	// EnvAPIURL holds the API URL when --api is not given.
	EnvAPIURL = "ROTAGATE_API"

	cliTimeout = 30 * time.Second
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:      "client-credentials",
		Usage:     "<command> <action> [flags]",
		Short:     "Manages rotagate clients and secrets through the control plane API",
		CobraFunc: SetupCLI,
	})
}

// cliAbout and cliNotes are the help text around the list of commands,
// which SetupCLI writes from the command tree itself.
const (
	cliAbout = `
Manages the clients and secrets of a rotagate control plane through its
management API.

`
	cliNotes = `
--api is the control plane's base URL (default: $ROTAGATE_API, else
http://127.0.0.1:9180). The admin token comes from --token or, better since
command lines are visible to other users, from $ROTAGATE_ADMIN_TOKEN.

A generated secret is printed once, alone on stdout, so that it can be
captured by a script; everything else goes to stderr. --json prints the
API's answers as they are.
`
)

// commandList lists every command of the tree under root that runs,
// with its arguments, flags and what it does, so that the help text
// names every command there is.
func commandList(root *cobra.Command) string {
	type line struct{ use, short string }
	var lines []line
	width := 0
	var walk func(c *cobra.Command, path string)
	walk = func(c *cobra.Command, path string) {
		for _, sub := range c.Commands() {
			if !sub.IsAvailableCommand() {
				continue
			}
			p := strings.TrimSpace(path + " " + sub.Use)
			if sub.Runnable() {
				if sub.HasAvailableLocalFlags() {
					p += " [flags]"
				}
				lines = append(lines, line{p, sub.Short})
				width = max(width, len(p))
			}
			walk(sub, strings.TrimSpace(path+" "+sub.Name()))
		}
	}
	walk(root, "")
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "  %-*s  %s\n", width, l.use, l.short)
	}
	return b.String()
}

var (
	cliExtMu sync.Mutex
	cliExts  []func(root *cobra.Command)
)

// AddCLICommand registers f to add subcommands (such as demo) to
// `caddy client-credentials`. Call it from an init function. f runs each
// time the command tree is built, after the built-in subcommands exist;
// CLIFlags reads the shared flags from within a subcommand.
func AddCLICommand(f func(root *cobra.Command)) {
	cliExtMu.Lock()
	defer cliExtMu.Unlock()
	cliExts = append(cliExts, f)
}

// SetupCLI fills in cmd as the `client-credentials` command: its flags,
// the client and secret subcommands, and those added by AddCLICommand.
func SetupCLI(cmd *cobra.Command) {
	cmd.PersistentFlags().String("api", "", "control plane base URL (default $"+EnvAPIURL+" or "+DefaultAPIURL+")")
	cmd.PersistentFlags().String("token", "", "admin token (default $"+EnvAdminToken+")")
	cmd.PersistentFlags().Bool("json", false, "print the API's JSON answers")
	cmd.AddCommand(clientCommand(), secretCommand())
	cliExtMu.Lock()
	exts := append([]func(*cobra.Command){}, cliExts...)
	cliExtMu.Unlock()
	for _, f := range exts {
		f(cmd)
	}
	cmd.Long = cliAbout + commandList(cmd) + cliNotes
}

// NewCLI returns a stand-alone `client-credentials` command tree, as
// SetupCLI builds it inside Caddy.
func NewCLI() *cobra.Command {
	cmd := &cobra.Command{Use: "client-credentials", Short: "Manages rotagate clients and secrets", SilenceUsage: true}
	SetupCLI(cmd)
	return cmd
}

// CLIFlags returns the --api URL and the admin token in force for cmd,
// from its flags or the environment.
func CLIFlags(cmd *cobra.Command) (apiURL, token string) {
	apiURL, _ = cmd.Flags().GetString("api")
	if apiURL == "" {
		apiURL = os.Getenv(EnvAPIURL)
	}
	if apiURL == "" {
		apiURL = DefaultAPIURL
	}
	token, _ = cmd.Flags().GetString("token")
	if token == "" {
		token = os.Getenv(EnvAdminToken)
	}
	return apiURL, token
}

func clientCommand() *cobra.Command {
	c := &cobra.Command{Use: "client", Short: "Creates, lists, shows and deletes clients"}

	create := &cobra.Command{
		Use:   "create",
		Short: "Creates a client (with a generated cli_… id unless --id is given)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := createClientRequest{}
			req.Name, _ = cmd.Flags().GetString("name")
			req.Owners, _ = cmd.Flags().GetStringArray("owner")
			if cmd.Flags().Changed("id") {
				id, _ := cmd.Flags().GetString("id")
				req.ClientID = &id
			}
			var out clientJSON
			return run(cmd, http.MethodPost, "/v1/clients", req, &out, func(w io.Writer) {
				fmt.Fprintln(w, out.ClientID)
				fmt.Fprintf(cmd.ErrOrStderr(), "created client %s\n", out.ClientID)
			})
		},
	}
	create.Flags().String("id", "", "client_id (default: generated)")
	create.Flags().String("name", "", "display name")
	create.Flags().StringArray("owner", nil, "a user who may rotate the client's secrets (repeatable)")

	owners := &cobra.Command{
		Use:   "owners <client_id>",
		Short: "Adds or removes owners of a client, then prints its owners",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			add, _ := cmd.Flags().GetStringArray("add")
			remove, _ := cmd.Flags().GetStringArray("remove")
			var out clientJSON
			listOwners := func(w io.Writer) { fmt.Fprintln(w, strings.Join(out.Owners, "\n")) }
			if len(add) == 0 && len(remove) == 0 {
				return run(cmd, http.MethodGet, clientPath(args[0]), nil, &out, listOwners)
			}
			return run(cmd, http.MethodPatch, clientPath(args[0])+"/owners", patchOwnersRequest{Add: add, Remove: remove}, &out, listOwners)
		},
	}
	owners.Flags().StringArray("add", nil, "user id to add (repeatable)")
	owners.Flags().StringArray("remove", nil, "user id to remove (repeatable)")

	list := &cobra.Command{
		Use:   "list",
		Short: "Lists all clients",
		Args:  cobra.NoArgs,
		RunE:  listClientsCmd,
	}

	show := &cobra.Command{
		Use:   "show <client_id>",
		Short: "Shows a client and its secrets",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out clientDetailJSON
			return run(cmd, http.MethodGet, clientPath(args[0]), nil, &out, func(w io.Writer) {
				networks := "anywhere"
				if len(out.AllowedCIDRs) > 0 {
					networks = strings.Join(out.AllowedCIDRs, ", ")
					if out.NetworksReportOnly {
						networks += " (report only)"
					}
				}
				fmt.Fprintf(w, "client_id: %s\nname:      %s\nowners:    %s\nnetworks:  %s\ncreated:   %s\n\n", out.ClientID, out.Name,
					orDash(strings.Join(out.Owners, ", ")), networks, fmtTime(&out.CreatedAt, "-"))
				printSecrets(w, out.Secrets)
				var co cutoverJSON
				if err := call(cmd, http.MethodGet, clientPath(args[0])+"/cutover", nil, &co); err != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "cut-over state unavailable: %v\n", err)
					return
				}
				fmt.Fprintln(w)
				printCutoverState(w, co)
			})
		},
	}

	del := &cobra.Command{
		Use:   "delete <client_id>",
		Short: "Deletes a client, revoking all its secrets",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, http.MethodDelete, clientPath(args[0]), nil, nil, func(w io.Writer) {
				fmt.Fprintf(cmd.ErrOrStderr(), "deleted client %s\n", args[0])
			})
		},
	}

	c.AddCommand(create, list, show, owners, networksCommand(), cutoverCommand(), del)
	return c
}

func listClientsCmd(cmd *cobra.Command, _ []string) error {
	asJSON, _ := cmd.Flags().GetBool("json")
	var all []clientJSON
	after := ""
	for {
		q := url.Values{"limit": {fmt.Sprint(rules.MaxPageSize)}}
		if after != "" {
			q.Set("after", after)
		}
		var page clientListJSON
		if err := call(cmd, http.MethodGet, "/v1/clients?"+q.Encode(), nil, &page); err != nil {
			return err
		}
		all = append(all, page.Clients...)
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	w := cmd.OutOrStdout()
	if asJSON {
		return printJSON(w, clientListJSON{Clients: all})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT_ID\tNAME\tOWNERS\tCREATED")
	for _, c := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.ClientID, orDash(c.Name), orDash(strings.Join(c.Owners, ",")), fmtTime(&c.CreatedAt, "-"))
	}
	return tw.Flush()
}

func secretCommand() *cobra.Command {
	c := &cobra.Command{Use: "secret", Short: "Generates, imports, rotates, revokes and lists secrets"}

	generate := &cobra.Command{
		Use:   "generate <client_id>",
		Short: "Generates a secret; it is printed this once",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req generateRequest
			if v, _ := cmd.Flags().GetString("expires-in"); v != "" {
				req.ExpiresIn = &v
			}
			var out createdSecretJSON
			return run(cmd, http.MethodPost, clientPath(args[0])+"/secrets", req, &out, func(w io.Writer) {
				printCreated(cmd, w, args[0], out)
			})
		},
	}
	generate.Flags().String("expires-in", "", "expire the secret after this Go duration (e.g. 720h)")

	imp := &cobra.Command{
		Use:   "import <client_id>",
		Short: "Imports a legacy secret: a bcrypt/argon2id/PBKDF2 hash, or the plaintext read from stdin",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			hash, _ := cmd.Flags().GetString("hash")
			stdin, _ := cmd.Flags().GetBool("stdin")
			req := generateRequest{Import: &importRequest{Hash: hash}}
			switch {
			case hash != "" && stdin, hash == "" && !stdin:
				return errors.New("give exactly one of --hash and --stdin")
			case stdin:
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("reading the secret from stdin: %w", err)
				}
				req.Import.Secret = strings.TrimRight(line, "\r\n")
				if req.Import.Secret == "" {
					return errors.New("no secret on stdin")
				}
			}
			if v, _ := cmd.Flags().GetString("expires-in"); v != "" {
				req.ExpiresIn = &v
			}
			var out createdSecretJSON
			return run(cmd, http.MethodPost, clientPath(args[0])+"/secrets", req, &out, func(w io.Writer) {
				fmt.Fprintf(w, "%s\n", out.ID)
				fmt.Fprintf(cmd.ErrOrStderr(), "imported secret %s (%s) for client %s, expires %s\n",
					out.ID, out.Hint, args[0], fmtTime(out.ExpiresAt, "never"))
				for _, warning := range out.Warnings {
					fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", warning)
				}
			})
		},
	}
	imp.Flags().String("hash", "", "bcrypt ($2a$/$2b$/$2y$), argon2id PHC or PBKDF2 ($pbkdf2-sha256$/$pbkdf2-sha512$, Kong's or passlib's form) hash of the legacy secret")
	imp.Flags().Bool("stdin", false, "read the plaintext legacy secret from the first line of stdin")
	imp.Flags().String("expires-in", "", "expire the secret after this Go duration (e.g. 720h)")

	rotate := &cobra.Command{
		Use:   "rotate <client_id>",
		Short: "Generates a new secret and schedules the others to expire after --grace",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			grace, _ := cmd.Flags().GetString("grace")
			if grace == "" {
				return errors.New(`--grace is required: how long the other secrets keep working (e.g. 24h); "0s" revokes them at once`)
			}
			var out rotatedSecretJSON
			return run(cmd, http.MethodPost, clientPath(args[0])+"/secrets/rotate", rotateRequest{Grace: &grace}, &out, func(w io.Writer) {
				printCreated(cmd, w, args[0], out.createdSecretJSON)
				for _, id := range out.Expiring {
					fmt.Fprintf(cmd.ErrOrStderr(), "secret %s expires within %s\n", id, grace)
				}
				for _, id := range out.Revoked {
					fmt.Fprintf(cmd.ErrOrStderr(), "secret %s revoked\n", id)
				}
			})
		},
	}
	rotate.Flags().String("grace", "", `how long the other active secrets keep working (Go duration; "0s" revokes them now)`)

	revoke := &cobra.Command{
		Use:   "revoke <client_id> <secret_id>",
		Short: "Revokes a secret at once",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out secretJSON
			return run(cmd, http.MethodDelete, clientPath(args[0])+"/secrets/"+url.PathEscape(args[1]), nil, &out, func(w io.Writer) {
				fmt.Fprintf(cmd.ErrOrStderr(), "revoked secret %s (%s) of client %s\n", out.ID, out.Hint, args[0])
			})
		},
	}

	list := &cobra.Command{
		Use:   "list <client_id>",
		Short: "Lists a client's secrets with their status and last use",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out secretListJSON
			return run(cmd, http.MethodGet, clientPath(args[0])+"/secrets", nil, &out, func(w io.Writer) {
				printSecrets(w, out.Secrets)
			})
		},
	}

	c.AddCommand(generate, imp, rotate, revoke, list, callersCommand())
	return c
}

func clientPath(id string) string { return "/v1/clients/" + url.PathEscape(id) }

// printCreated writes a new secret alone on stdout and its description on
// stderr. Import answers carry no secret: then only the id is printed.
func printCreated(cmd *cobra.Command, w io.Writer, clientID string, out createdSecretJSON) {
	fmt.Fprintln(w, out.Secret)
	fmt.Fprintf(cmd.ErrOrStderr(), "secret %s (%s) for client %s, expires %s; it is shown only this once\n",
		out.ID, out.Hint, clientID, fmtTime(out.ExpiresAt, "never"))
}

// printSecrets writes the table of `secret list`.
func printSecrets(w io.Writer, secrets []secretJSON) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATUS\tHINT\tCREATED\tEXPIRES\tLAST USED\tLAST USED FROM\tPRESENTED AFTER REVOKE")
	for _, s := range secrets {
		from := "-"
		if s.LastUsedFrom != nil && *s.LastUsedFrom != "" {
			from = *s.LastUsedFrom
		}
		expires := fmtTime(s.ExpiresAt, "-")
		if s.RevokedAt != nil {
			expires = "revoked " + fmtTime(s.RevokedAt, "")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Status, s.Hint,
			fmtTime(&s.CreatedAt, "-"), expires, fmtTime(s.LastUsedAt, "never"), from, afterRevoke(s))
	}
	tw.Flush()
}

// afterRevoke words a secret's presented-after-revoke count: "-", or
// "3 (last 2030-01-02T03:04:05Z from 203.0.113.9)"; a leak report adds
// "; leak reported".
func afterRevoke(s secretJSON) string {
	out := "-"
	if s.PresentedAfterRevoke > 0 {
		out = fmt.Sprintf("%d (last %s", s.PresentedAfterRevoke, fmtTime(s.LastPresentedAfterRevokeAt, "?"))
		if s.LastPresentedAfterRevokeFrom != nil {
			out += " from " + *s.LastPresentedAfterRevokeFrom
		}
		out += ")"
	}
	if s.LeakReportedAt != nil {
		out += "; leak reported " + fmtTime(s.LeakReportedAt, "")
	}
	return out
}

func fmtTime(t *time.Time, none string) string {
	if t == nil || t.IsZero() {
		return none
	}
	return t.UTC().Format(time.RFC3339)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// run calls the API and prints the answer: as JSON with --json, else
// through human.
func run(cmd *cobra.Command, method, path string, body, out any, human func(io.Writer)) error {
	var raw json.RawMessage
	if err := call(cmd, method, path, body, &raw); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
		if len(raw) == 0 {
			return nil
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err := buf.WriteTo(w)
		return err
	}
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("reading the answer: %w", err)
		}
	}
	human(w)
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// call sends one request to the management API and decodes the answer
// into out (left alone for 204). API errors become Go errors naming the
// error code and description.
func call(cmd *cobra.Command, method, path string, body, out any) error {
	base, token := CLIFlags(cmd)
	if token == "" {
		return fmt.Errorf("no admin token: set $%s or pass --token", EnvAdminToken)
	}
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || u.Scheme == "" || u.Host == "" {
		return fmt.Errorf("--api must be a URL such as %s", DefaultAPIURL)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, cliTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String()+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("calling the control plane: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode >= 300 {
		var e errorJSON
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s (HTTP %d): %s", e.Error, resp.StatusCode, e.Description)
		}
		return fmt.Errorf("control plane answered HTTP %d", resp.StatusCode)
	}
	if resp.StatusCode == http.StatusNoContent || out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	return nil
}
