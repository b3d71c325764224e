package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	"github.com/spf13/cobra"

	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/sink"
)

// sinkCommand is `client sink`: show, set or remove a client's delivery
// sink (SPEC §15).
func sinkCommand() *cobra.Command {
	c := clientResourceCommand("sink", "Shows or sets where a client's new secrets are delivered (--webhook, --aws, --file), or removes it (--delete)",
		`Shows or sets the client's sink: where its new secrets go instead of to
whoever generates them. With no flag it prints the sink. --webhook <url> with
--public-key <file> (the receiver's EC P-256 public JWK) sets a webhook sink;
the answer's signing secret, which the receiver verifies every event with, is
printed once on stdout. --aws <secret name or ARN> with --region (and
--endpoint) sets an AWS Secrets Manager sink. --file <path> (or - for stdin)
sets the sink from its JSON instead. --rotate-every (e.g. 90d) rotates the
client on a schedule. --delete removes the sink.`,
		func(cmd *cobra.Command, clientID, path string) error {
			f := cmd.Flags()
			del, _ := f.GetBool("delete")
			file, _ := f.GetString("file")
			hook, _ := f.GetString("webhook")
			awsID, _ := f.GetString("aws")
			setting := file != "" || hook != "" || awsID != ""
			switch {
			case del && (setting || f.Changed("rotate-every")):
				return errors.New("--delete takes no other flag")
			case del:
				if err := call(cmd, http.MethodDelete, path, nil, nil); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "client %s has no sink any more: its new secrets are shown once again\n", clientID)
				return nil
			case !setting && countSet(cmd, "public-key", "region", "endpoint", "rotate-every") > 0:
				return errors.New("give --webhook, --aws or --file to set a sink")
			case !setting:
				var out api.Sink
				return run(cmd, http.MethodGet, path, nil, &out, func(w io.Writer) { printSink(w, out) })
			}
			cfg, err := sinkFromFlags(cmd, file, hook, awsID)
			if err != nil {
				return err
			}
			var out api.Sink
			return run(cmd, http.MethodPut, path, cfg, &out, func(w io.Writer) {
				if out.SigningSecret != "" {
					fmt.Fprintln(w, out.SigningSecret)
					fmt.Fprintf(cmd.ErrOrStderr(), "the webhook sink's signing secret is shown only this once: give it to the receiver\n")
				}
				printSink(cmd.ErrOrStderr(), out)
			})
		})
	f := c.Flags()
	f.String("webhook", "", "set a webhook sink posting to this https URL (http only to a loopback address)")
	f.String("public-key", "", "with --webhook: file holding the receiver's public JWK (EC P-256)")
	f.String("aws", "", "set an AWS Secrets Manager sink writing to this secret (name or ARN)")
	f.String("region", "", "with --aws: the secret's AWS region")
	f.String("endpoint", "", "with --aws: a Secrets Manager endpoint other than the region's")
	f.String("rotate-every", "", "rotate the client through the sink when its newest secret is older than this (e.g. 90d, 720h)")
	f.String("file", "", "set the sink from this JSON file (- for stdin), as PUT /v1/clients/{id}/sink takes it")
	f.Bool("delete", false, "remove the sink")
	return c
}

// countSet counts the named flags that were given.
func countSet(cmd *cobra.Command, names ...string) int {
	n := 0
	for _, name := range names {
		if fl := cmd.Flags().Lookup(name); fl != nil && fl.Changed {
			n++
		}
	}
	return n
}

// sinkFromFlags builds the sink config the flags describe.
func sinkFromFlags(cmd *cobra.Command, file, hook, awsID string) (sink.Config, error) {
	f := cmd.Flags()
	every, _ := f.GetString("rotate-every")
	keyFile, _ := f.GetString("public-key")
	region, _ := f.GetString("region")
	endpoint, _ := f.GetString("endpoint")
	var cfg sink.Config
	switch {
	case countSet(cmd, "file", "webhook", "aws") != 1:
		return cfg, errors.New("give one of --webhook, --aws and --file")
	case file != "":
		if keyFile != "" || region != "" || endpoint != "" {
			return cfg, errors.New("--file holds the whole sink: give no --public-key, --region or --endpoint")
		}
		var data []byte
		var err error
		if file == "-" {
			data, err = io.ReadAll(cmd.InOrStdin())
		} else {
			data, err = os.ReadFile(file)
		}
		if err != nil {
			return cfg, fmt.Errorf("reading the sink: %w", err)
		}
		if err := json.Unmarshal(data, &cfg); err != nil {
			return cfg, fmt.Errorf("the sink file is not a sink's JSON: %w", err)
		}
	case hook != "":
		if keyFile == "" {
			return cfg, errors.New("--webhook needs --public-key: the receiver's public JWK file")
		}
		if region != "" || endpoint != "" {
			return cfg, errors.New("--region and --endpoint go with --aws")
		}
		key, err := os.ReadFile(keyFile)
		if err != nil {
			return cfg, fmt.Errorf("reading the public key: %w", err)
		}
		cfg = sink.Config{Kind: sink.KindWebhook, URL: hook, PublicKey: json.RawMessage(key)}
	default:
		if keyFile != "" {
			return cfg, errors.New("--public-key goes with --webhook")
		}
		cfg = sink.Config{Kind: sink.KindAWSSecretsManager, SecretID: awsID, Region: region, Endpoint: endpoint}
	}
	if every != "" {
		cfg.RotateEvery = every
	}
	return cfg, nil
}

// printSink writes a sink without its key material: kind, target and
// schedule.
func printSink(w io.Writer, k api.Sink) {
	target := k.URL
	if k.Kind == sink.KindAWSSecretsManager {
		target = k.SecretID + " (" + k.Region + ")"
		if k.Endpoint != "" {
			target += " via " + k.Endpoint
		}
	}
	fmt.Fprintf(w, "kind:          %s\n", k.Kind)
	fmt.Fprintf(w, "target:        %s\n", target)
	fmt.Fprintf(w, "rotate every:  %s\n", orDash(k.RotateEvery))
	fmt.Fprintf(w, "updated:       %s\n", api.FormatTime(&k.UpdatedAt, "-"))
}
