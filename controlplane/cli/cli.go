package cli

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
	"reflect"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
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
	// EnvPassword holds the password of the user that --user (or the
	// user in --api's URL) names.
	EnvPassword = "ROTAGATE_PASSWORD"

	cliTimeout = 30 * time.Second
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:      "client-credentials",
		Usage:     "<command> <action> [flags]",
		Short:     "Manages rotagate clients and secrets through the control plane API",
		CobraFunc: Setup,
	})
}

// cliAbout and cliNotes are the help text around the list of commands,
// which Setup writes from the command tree itself.
const (
	cliAbout = `
Manages the clients and secrets of a rotagate control plane through its
management API.

`
	cliNotes = `
--api is the control plane's base URL, without /v1 (default: $ROTAGATE_API,
else http://127.0.0.1:9180). Admins sign in with the admin token, from
--token or, better since command lines are visible to other users, from
$ROTAGATE_ADMIN_TOKEN. Owners sign in as a user of the basic_auth in front
of the control plane: --user <id> with the password in $ROTAGATE_PASSWORD
(or http://<id>:<password>@host in --api).

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
			if sub.Runnable() && !sub.HasAvailableSubCommands() {
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

// AddCommand registers f to add subcommands (such as demo) to
// `caddy client-credentials`. Call it from an init function. f runs each
// time the command tree is built, after the built-in subcommands exist;
// Flags reads the shared flags from within a subcommand.
func AddCommand(f func(root *cobra.Command)) {
	cliExtMu.Lock()
	defer cliExtMu.Unlock()
	cliExts = append(cliExts, f)
}

// Setup fills in cmd as the `client-credentials` command: its flags,
// the client and secret subcommands, and those added by AddCommand.
func Setup(cmd *cobra.Command) {
	cmd.PersistentFlags().String("api", "", "control plane base URL (default $"+EnvAPIURL+" or "+DefaultAPIURL+")")
	cmd.PersistentFlags().String("token", "", "admin token (default $"+EnvAdminToken+")")
	cmd.PersistentFlags().String("user", "", "sign in as this user of the basic_auth in front of the control plane, with the password in $"+EnvPassword+" (owners)")
	cmd.PersistentFlags().Bool("json", false, "print the API's JSON answers")
	cmd.AddCommand(clientCommand(), secretCommand())
	cliExtMu.Lock()
	exts := append([]func(*cobra.Command){}, cliExts...)
	cliExtMu.Unlock()
	for _, f := range exts {
		f(cmd)
	}
	cmd.Long = cliAbout + commandList(cmd) + cliNotes
	commandsOnly(cmd)
}

// commandsOnly makes cmd and every command under it that only groups
// others refuse an argument that is not one of them. Cobra would print
// the help and succeed, so a typo (secret lst) would look like success.
func commandsOnly(cmd *cobra.Command) {
	for _, sub := range cmd.Commands() {
		commandsOnly(sub)
	}
	if !cmd.HasAvailableSubCommands() || cmd.Run != nil || cmd.RunE != nil {
		return
	}
	cmd.Args = cobra.ArbitraryArgs
	cmd.SuggestionsMinimumDistance = 2
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		var names []string
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() {
				names = append(names, sub.Name())
			}
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return fmt.Errorf("%s (commands: %s)", msg, strings.Join(names, ", "))
	}
}

// command is a leaf command: use names its <arguments>, which namedArgs
// checks before run.
func command(use, short string, run func(cmd *cobra.Command, args []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: namedArgs, RunE: run}
}

// clientResourceCommand is `client <name> <client_id>`, a command over
// the client's resource /v1/clients/{client_id}/<name>: namedArgs checks
// its argument, and run gets the client id and the resource's path.
func clientResourceCommand(name, short, long string, run func(cmd *cobra.Command, clientID, path string) error) *cobra.Command {
	return &cobra.Command{
		Use:   name + " <client_id>",
		Short: short,
		Long:  long,
		Args:  namedArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return run(cmd, args[0], clientPath(args[0])+"/"+name)
		},
	}
}

// namedArgs checks a command's arguments against the <names> of its Use
// line, and names the missing or extra ones.
func namedArgs(cmd *cobra.Command, args []string) error {
	var names []string
	for _, f := range strings.Fields(cmd.Use)[1:] {
		if strings.HasPrefix(f, "<") {
			names = append(names, f)
		}
	}
	switch {
	case len(args) < len(names):
		return fmt.Errorf("missing %s; usage: %s", strings.Join(names[len(args):], " "), cmd.UseLine())
	case len(args) > len(names):
		return fmt.Errorf("too many arguments (%s); usage: %s", strings.Join(args[len(names):], " "), cmd.UseLine())
	}
	return nil
}

// New returns a stand-alone `client-credentials` command tree, as
// Setup builds it inside Caddy.
func New() *cobra.Command {
	cmd := &cobra.Command{Use: "client-credentials", Short: "Manages rotagate clients and secrets", SilenceUsage: true}
	Setup(cmd)
	return cmd
}

// Flags returns the --api URL and the admin token in force for cmd,
// from its flags or the environment.
func Flags(cmd *cobra.Command) (apiURL, token string) {
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

	create := command("create", "Creates a client (with a generated cli_… id unless --id is given)", func(cmd *cobra.Command, _ []string) error {
		req := api.CreateClientRequest{}
		req.Name, _ = cmd.Flags().GetString("name")
		req.Owners, _ = cmd.Flags().GetStringArray("owner")
		if cmd.Flags().Changed("id") {
			id, _ := cmd.Flags().GetString("id")
			req.ClientID = &id
		}
		var out api.Client
		return run(cmd, http.MethodPost, "/v1/clients", req, &out, func(w io.Writer) {
			fmt.Fprintln(w, out.ClientID)
			fmt.Fprintf(cmd.ErrOrStderr(), "created client %s\n", out.ClientID)
		})
	})
	create.Flags().String("id", "", "client_id (default: generated)")
	create.Flags().String("name", "", "display name")
	create.Flags().StringArray("owner", nil, "a user who may rotate the client's secrets (repeatable)")

	owners := command("owners <client_id>", "Adds or removes owners of a client, then prints its owners", func(cmd *cobra.Command, args []string) error {
		add, _ := cmd.Flags().GetStringArray("add")
		remove, _ := cmd.Flags().GetStringArray("remove")
		var out api.Client
		listOwners := func(w io.Writer) { fmt.Fprintln(w, strings.Join(out.Owners, "\n")) }
		if len(add) == 0 && len(remove) == 0 {
			return run(cmd, http.MethodGet, clientPath(args[0]), nil, &out, listOwners)
		}
		return run(cmd, http.MethodPatch, clientPath(args[0])+"/owners", api.PatchOwnersRequest{Add: add, Remove: remove}, &out, listOwners)
	})
	owners.Flags().StringArray("add", nil, "user id to add (repeatable)")
	owners.Flags().StringArray("remove", nil, "user id to remove (repeatable)")

	list := command("list", "Lists all clients", listClientsCmd)

	show := command("show <client_id>", "Shows a client and its secrets", func(cmd *cobra.Command, args []string) error {
		var out api.ClientDetail
		return run(cmd, http.MethodGet, clientPath(args[0]), nil, &out, func(w io.Writer) {
			networks := "anywhere"
			if len(out.AllowedCIDRs) > 0 {
				networks = strings.Join(out.AllowedCIDRs, ", ")
				if out.NetworksReportOnly {
					networks += " (report only)"
				}
			}
			fmt.Fprintf(w, "client_id: %s\nname:      %s\nowners:    %s\nnetworks:  %s\ncreated:   %s\n\n", out.ClientID, out.Name,
				orDash(strings.Join(out.Owners, ", ")), networks, api.FormatTime(&out.CreatedAt, "-"))
			printSecrets(w, out.Secrets)
			var co api.Cutover
			if err := call(cmd, http.MethodGet, clientPath(args[0])+"/cutover", nil, &co); err != nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "cut-over state unavailable: %v\n", err)
				return
			}
			fmt.Fprintln(w)
			printCutoverState(w, co)
		})
	})

	del := command("delete <client_id>", "Deletes a client, revoking all its secrets", func(cmd *cobra.Command, args []string) error {
		return run(cmd, http.MethodDelete, clientPath(args[0]), nil, nil, func(w io.Writer) {
			fmt.Fprintf(cmd.ErrOrStderr(), "deleted client %s\n", args[0])
		})
	})

	c.AddCommand(create, list, show, owners, networksCommand(), cutoverCommand(), sinkCommand(), del)
	return c
}

func listClientsCmd(cmd *cobra.Command, _ []string) error {
	asJSON, _ := cmd.Flags().GetBool("json")
	var all []api.Client
	after := ""
	for {
		q := url.Values{"limit": {fmt.Sprint(rules.MaxPageSize)}}
		if after != "" {
			q.Set("after", after)
		}
		var page api.ClientList
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
		return printJSON(w, api.ClientList{Clients: all})
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT_ID\tNAME\tOWNERS\tCREATED")
	for _, c := range all {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.ClientID, orDash(c.Name), orDash(strings.Join(c.Owners, ",")), api.FormatTime(&c.CreatedAt, "-"))
	}
	return tw.Flush()
}

func secretCommand() *cobra.Command {
	c := &cobra.Command{Use: "secret", Short: "Generates, imports, rotates, revokes and lists secrets"}

	generate := command("generate <client_id>", "Generates a secret; it is printed this once", func(cmd *cobra.Command, args []string) error {
		var req api.GenerateRequest
		var err error
		if req.ExpiresIn, err = expiresIn(cmd); err != nil {
			return err
		}
		var out api.CreatedSecret
		return run(cmd, http.MethodPost, clientPath(args[0])+"/secrets", req, &out, func(w io.Writer) {
			printCreated(cmd, w, args[0], out)
		})
	})
	generate.Flags().String("expires-in", "", "expire the secret after this duration (e.g. 30d, 12h)")

	imp := command("import <client_id>", "Imports a legacy secret: a bcrypt/argon2id/PBKDF2 hash, or the plaintext read from stdin", func(cmd *cobra.Command, args []string) error {
		hash, _ := cmd.Flags().GetString("hash")
		stdin, _ := cmd.Flags().GetBool("stdin")
		req := api.GenerateRequest{Import: &api.ImportRequest{Hash: hash}}
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
		var err error
		if req.ExpiresIn, err = expiresIn(cmd); err != nil {
			return err
		}
		var out api.CreatedSecret
		return run(cmd, http.MethodPost, clientPath(args[0])+"/secrets", req, &out, func(w io.Writer) {
			fmt.Fprintf(w, "%s\n", out.ID)
			fmt.Fprintf(cmd.ErrOrStderr(), "imported secret %s (%s) for client %s, expires %s\n",
				out.ID, out.Hint, args[0], api.FormatTime(out.ExpiresAt, "never"))
			for _, warning := range out.Warnings {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s\n", warning)
			}
		})
	})
	imp.Flags().String("hash", "", "bcrypt ($2a$/$2b$/$2y$), argon2id PHC or PBKDF2 ($pbkdf2-sha256$/$pbkdf2-sha512$, Kong's or passlib's form) hash of the legacy secret")
	imp.Flags().Bool("stdin", false, "read the plaintext legacy secret from the first line of stdin")
	imp.Flags().String("expires-in", "", "expire the secret after this duration (e.g. 30d, 12h)")

	add := &cobra.Command{
		Use:   "add <client_id>",
		Short: "Registers a public key (private_key_jwt) or a client certificate (tls_client_auth) from a file",
		Args:  namedArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.GenerateRequest{}
			if err := readCredential(cmd, &req.CredentialRequest, true); err != nil {
				return err
			}
			if v, _ := cmd.Flags().GetString("expires-in"); v != "" {
				req.ExpiresIn = &v
			}
			var out api.CreatedSecret
			return run(cmd, http.MethodPost, clientPath(args[0])+"/secrets", req, &out, func(w io.Writer) {
				printCreated(cmd, w, args[0], out)
			})
		},
	}
	credentialFlags(add)
	add.Flags().String("expires-in", "", "expire the credential after this Go duration (e.g. 720h)")

	rotate := command("rotate <client_id>", "Generates a new secret (or registers --public-key/--certificate) and schedules the others to expire after --grace", func(cmd *cobra.Command, args []string) error {
		grace, _ := cmd.Flags().GetString("grace")
		if grace == "" {
			return errors.New(`--grace is required: how long the other secrets keep working (e.g. 24h, 7d); "0s" revokes them at once`)
		}
		if d, err := caddy.ParseDuration(grace); err != nil || d < 0 {
			return fmt.Errorf(`--grace %q is not a duration of 0s or more (e.g. 24h, 7d; "0s" revokes the other secrets at once)`, grace)
		}
		req := api.RotateRequest{Grace: &grace}
		if err := readCredential(cmd, &req.CredentialRequest, false); err != nil {
			return err
		}
		var out api.RotatedSecret
		return run(cmd, http.MethodPost, clientPath(args[0])+"/secrets/rotate", req, &out, func(w io.Writer) {
			printCreated(cmd, w, args[0], out.CreatedSecret)
			for _, id := range out.Expiring {
				fmt.Fprintf(cmd.ErrOrStderr(), "secret %s expires within %s\n", id, grace)
			}
			for _, id := range out.Revoked {
				fmt.Fprintf(cmd.ErrOrStderr(), "secret %s revoked\n", id)
			}
		})
	})
	rotate.Flags().String("grace", "", `how long the other active secrets keep working (e.g. 24h, 7d; "0s" revokes them now)`)
	credentialFlags(rotate)

	revoke := command("revoke <client_id> <secret_id>", "Revokes a secret at once", func(cmd *cobra.Command, args []string) error {
		var out api.Secret
		return run(cmd, http.MethodDelete, clientPath(args[0])+"/secrets/"+url.PathEscape(args[1]), nil, &out, func(w io.Writer) {
			fmt.Fprintf(cmd.ErrOrStderr(), "revoked secret %s (%s) of client %s\n", out.ID, out.Hint, args[0])
		})
	})

	label := command("label <client_id> <secret_id> <label>", `Labels a secret with the app that has it ("" clears the label)`, func(cmd *cobra.Command, args []string) error {
		var out api.Secret
		return run(cmd, http.MethodPut, clientPath(args[0])+"/secrets/"+url.PathEscape(args[1])+"/label", api.LabelRequest{Label: &args[2]}, &out, func(w io.Writer) {
			fmt.Fprintf(cmd.ErrOrStderr(), "labelled secret %s (%s) of client %s: %s\n", out.ID, out.Hint, args[0], orDash(out.Label))
		})
	})

	list := command("list <client_id>", "Lists a client's secrets with their status and last use", func(cmd *cobra.Command, args []string) error {
		var out api.SecretList
		return run(cmd, http.MethodGet, clientPath(args[0])+"/secrets", nil, &out, func(w io.Writer) {
			printSecrets(w, out.Secrets)
		})
	})

	c.AddCommand(generate, imp, add, rotate, revoke, label, list, callersCommand())
	return c
}

// expiresIn reads --expires-in: empty, or a positive duration (d for
// days accepted, as the API reads it).
func expiresIn(cmd *cobra.Command) (*string, error) {
	v, _ := cmd.Flags().GetString("expires-in")
	if v == "" {
		return nil, nil
	}
	d, err := caddy.ParseDuration(v)
	switch {
	case err != nil:
		return nil, fmt.Errorf("--expires-in %q is not a duration such as 30d or 12h", v)
	case d <= 0:
		return nil, fmt.Errorf("--expires-in must be positive, not %q", v)
	}
	return &v, nil
}

func clientPath(id string) string { return "/v1/clients/" + url.PathEscape(id) }

// credentialFlags adds the flags that name a key or certificate file.
func credentialFlags(c *cobra.Command) {
	c.Flags().String("public-key", "", "file holding the client's public JWK (private_key_jwt)")
	c.Flags().String("certificate", "", "file holding the client's PEM certificate (tls_client_auth)")
}

// readCredential reads the file --public-key or --certificate names into
// req; with required, one of them must be given.
func readCredential(cmd *cobra.Command, req *api.CredentialRequest, required bool) error {
	key, _ := cmd.Flags().GetString("public-key")
	cert, _ := cmd.Flags().GetString("certificate")
	switch {
	case key != "" && cert != "":
		return errors.New("give --public-key or --certificate, not both")
	case key != "":
		b, err := os.ReadFile(key)
		if err != nil {
			return fmt.Errorf("--public-key: %w", err)
		}
		if !json.Valid(b) {
			return fmt.Errorf("--public-key: %s holds no JSON (a JWK)", key)
		}
		req.PublicKey = b
	case cert != "":
		b, err := os.ReadFile(cert)
		if err != nil {
			return fmt.Errorf("--certificate: %w", err)
		}
		pem := string(b)
		req.Certificate = &pem
	case required:
		return errors.New("give --public-key <file.jwk> or --certificate <file.pem>")
	}
	return nil
}

// printCreated writes a new secret alone on stdout and its description on
// stderr. Import answers carry no secret: then only the id is printed; a
// key or certificate: its id and thumbprint.
func printCreated(cmd *cobra.Command, w io.Writer, clientID string, out api.CreatedSecret) {
	if out.DeliveredTo != "" {
		fmt.Fprintln(w, out.ID)
		fmt.Fprintf(cmd.ErrOrStderr(), "secret %s (%s) for client %s, expires %s; delivered to the client's %s sink, not shown\n",
			out.ID, out.Hint, clientID, api.FormatTime(out.ExpiresAt, "never"), out.DeliveredTo)
		return
	}
	if out.Kind != store.KindSecret && out.Kind != "" {
		fmt.Fprintln(w, out.ID)
		fmt.Fprintf(cmd.ErrOrStderr(), "%s %s (thumbprint %s) for client %s, expires %s\n",
			strings.ReplaceAll(string(out.Kind), "_", " "), out.ID, out.Thumbprint, clientID, api.FormatTime(out.ExpiresAt, "never"))
		return
	}
	fmt.Fprintln(w, out.Secret)
	fmt.Fprintf(cmd.ErrOrStderr(), "secret %s (%s) for client %s, expires %s; it is shown only this once\n",
		out.ID, out.Hint, clientID, api.FormatTime(out.ExpiresAt, "never"))
}

// printSecrets writes the table of `secret list`.
func printSecrets(w io.Writer, secrets []api.Secret) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSTATUS\tHINT\tCREATED\tEXPIRES\tLAST USED\tLAST USED FROM\tPRESENTED AFTER REVOKE")
	for _, s := range secrets {
		from := "-"
		if s.LastUsedFrom != nil && *s.LastUsedFrom != "" {
			from = *s.LastUsedFrom
		}
		expires := api.FormatTime(s.ExpiresAt, "-")
		if s.RevokedAt != nil {
			expires = "revoked " + api.FormatTime(s.RevokedAt, "")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Kind, s.Status, s.Hint,
			api.FormatTime(&s.CreatedAt, "-"), expires, api.FormatTime(s.LastUsedAt, "never"), from, afterRevoke(s))
	}
	tw.Flush()
}

// afterRevoke words a secret's presented-after-revoke count: "-", or
// "3 (last 2030-01-02T03:04:05Z from 203.0.113.9)"; a leak report adds
// "; leak reported".
func afterRevoke(s api.Secret) string {
	out := "-"
	if s.PresentedAfterRevoke > 0 {
		out = fmt.Sprintf("%d (last %s", s.PresentedAfterRevoke, api.FormatTime(s.LastPresentedAfterRevokeAt, "?"))
		if s.LastPresentedAfterRevokeFrom != nil {
			out += " from " + *s.LastPresentedAfterRevokeFrom
		}
		out += ")"
	}
	if s.LeakReportedAt != nil {
		out += "; leak reported " + api.FormatTime(s.LeakReportedAt, "")
	}
	return out
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
	a, err := send(cmd, method, path, body)
	if err != nil {
		return err
	}
	if err := a.decode(out); err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
		if len(a.data) == 0 {
			return nil
		}
		var buf bytes.Buffer
		if err := json.Indent(&buf, a.data, "", "  "); err != nil {
			return err
		}
		buf.WriteByte('\n')
		_, err := buf.WriteTo(w)
		return err
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
// into out (nil: the answer must be 204 No Content).
func call(cmd *cobra.Command, method, path string, body, out any) error {
	a, err := send(cmd, method, path, body)
	if err != nil {
		return err
	}
	return a.decode(out)
}

// signIn is how the CLI signs in: with the admin token as a bearer
// token, or as a user of the basic_auth that the control plane's site
// puts in front of /v1/clients (owners, docs/owners.md).
type signIn struct{ token, user, password string }

// cliSignIn reads the sign-in from the flags, the environment and the
// user in apiURL, which it removes from apiURL so that no message shows
// the password.
func cliSignIn(cmd *cobra.Command, apiURL *url.URL) (signIn, error) {
	_, token := Flags(cmd)
	tokenFlag, _ := cmd.Flags().GetString("token")
	user, _ := cmd.Flags().GetString("user")
	var password string
	if apiURL.User != nil {
		if user != "" {
			return signIn{}, errors.New("give the user in --user or in --api's URL, not both")
		}
		user, password = apiURL.User.Username(), ""
		if p, ok := apiURL.User.Password(); ok {
			password = p
		}
		apiURL.User = nil
	}
	switch {
	case user != "" && tokenFlag != "":
		return signIn{}, errors.New("give --token (admins) or a user (--user, owners), not both")
	case user != "":
		if password == "" {
			password = os.Getenv(EnvPassword)
		}
		if password == "" {
			return signIn{}, fmt.Errorf("no password for user %s: set $%s", user, EnvPassword)
		}
		return signIn{user: user, password: password}, nil
	case token == "":
		return signIn{}, fmt.Errorf("no admin token: set $%s or pass --token (admins), or sign in as an owner with --user and $%s", EnvAdminToken, EnvPassword)
	}
	return signIn{token: token}, nil
}

// apiAnswer is an answer of the management API, or of whatever --api
// points at: the request it answers, its status and body.
type apiAnswer struct {
	where  string
	base   *url.URL
	status int
	data   []byte
}

// send sends one request to the management API. An error answer becomes
// a Go error naming the API's error code and description or, when the
// answer is not the API's, the URL and the status.
func send(cmd *cobra.Command, method, path string, body any) (apiAnswer, error) {
	base, _ := Flags(cmd)
	u, err := url.Parse(strings.TrimRight(base, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return apiAnswer{}, fmt.Errorf("--api must be a URL such as %s", DefaultAPIURL)
	}
	who, err := cliSignIn(cmd, u)
	if err != nil {
		return apiAnswer{}, err
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return apiAnswer{}, err
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
		return apiAnswer{}, err
	}
	if who.user != "" {
		req.SetBasicAuth(who.user, who.password)
	} else {
		req.Header.Set("Authorization", "Bearer "+who.token)
	}
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	a := apiAnswer{where: method + " " + req.URL.Redacted(), base: u}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return a, fmt.Errorf("calling the control plane: %w", err)
	}
	defer resp.Body.Close()
	a.status = resp.StatusCode
	if a.data, err = io.ReadAll(io.LimitReader(resp.Body, 64<<20)); err != nil {
		return a, fmt.Errorf("%s: reading the answer: %w", a.where, err)
	}
	if a.status < 300 {
		return a, nil
	}
	var e api.ErrorBody
	switch {
	case json.Unmarshal(a.data, &e) != nil || e.Error == "":
		if a.status == http.StatusUnauthorized && who.user != "" && strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic") {
			return a, fmt.Errorf("%s answered HTTP 401: the basic_auth in front of the control plane refused user %s (is $%s right?)", a.where, who.user, EnvPassword)
		}
		return a, a.notTheAPI("no API error in the body")
	case e.Error == "invalid_client":
		return a, fmt.Errorf("%s answered invalid_client (HTTP %d) as a rotagate edge does: --api must name the control plane's site, not an edge's", a.where, a.status)
	case e.Error == "invalid_token" && who.user != "":
		return a, fmt.Errorf("invalid_token (HTTP %d): the control plane saw no signed-in user: put basic_auth in front of /v1/clients on its site (docs/owners.md)", a.status)
	}
	return a, fmt.Errorf("%s answered %s (HTTP %d): %s%s", a.where, e.Error, a.status, e.Description, a.withoutV1())
}

// withoutV1 is a hint when --api ends in /v1, which the CLI adds itself.
func (a apiAnswer) withoutV1() string {
	if strings.HasSuffix(a.base.Path, "/v1") {
		return " (--api must be the control plane's base URL, without /v1)"
	}
	return ""
}

// notTheAPI is the error for an answer that is not the management
// API's: it names the request and the status, and what --api should be.
func (a apiAnswer) notTheAPI(what string) error {
	if hint := a.withoutV1(); hint != "" {
		return fmt.Errorf("%s answered HTTP %d (%s)%s", a.where, a.status, what, hint)
	}
	return fmt.Errorf("%s answered HTTP %d (%s), which is not the management API's answer: --api must be the control plane's base URL", a.where, a.status, what)
}

// decode reads the answer into out, after checking that it is the
// answer the API gives: a JSON object with a field of out that the API
// always sends (one without omitempty; one is enough, so that a control
// plane older or newer than the CLI, with fields added since, still
// passes). With out nil, the answer must be 204 No Content.
func (a apiAnswer) decode(out any) error {
	if out == nil {
		if a.status != http.StatusNoContent {
			return a.notTheAPI("not 204 No Content")
		}
		return nil
	}
	if len(bytes.TrimSpace(a.data)) == 0 {
		return a.notTheAPI("an empty body")
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(a.data, &fields) != nil {
		return a.notTheAPI("not a JSON object")
	}
	want := alwaysSent(reflect.TypeOf(out).Elem())
	if len(want) > 0 && !slices.ContainsFunc(want, func(f string) bool { _, ok := fields[f]; return ok }) {
		what := fmt.Sprintf("%q", want[0])
		if len(want) > 1 {
			what = fmt.Sprintf("any of %q", want)
		}
		return a.notTheAPI("JSON without " + what)
	}
	if err := json.Unmarshal(a.data, out); err != nil {
		return fmt.Errorf("%s: reading the answer: %w", a.where, err)
	}
	return nil
}

// alwaysSent lists the JSON names of the fields of struct type t (and of
// the structs it embeds) that encoding/json always writes.
func alwaysSent(t reflect.Type) []string {
	if t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		switch {
		case f.Anonymous && tag == "":
			out = append(out, alwaysSent(f.Type)...)
		case !f.IsExported() || name == "-" || strings.Contains(opts, "omitempty") || strings.Contains(opts, "omitzero"):
		case name == "":
			out = append(out, f.Name)
		default:
			out = append(out, name)
		}
	}
	return out
}
