// Package sink delivers new secrets to where their consumers read them
// (SPEC §15): a webhook that receives each secret as a JWE encrypted to
// its own public key, or an AWS Secrets Manager secret that follows AWS's
// rotation stages. A client has at most one sink; its Config is what the
// management API stores and answers.
//
// The package holds no state and imports none of the other control-plane
// packages: the rules call it where a new secret is made, and the outbox
// sends what it builds.
package sink

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/go-jose/go-jose/v4"
)

// Kinds of sink.
const (
	KindWebhook           = "webhook"
	KindAWSSecretsManager = "aws_secrets_manager"
)

// MinRotateEvery is the shortest rotate_every. A scheduled rotation is not
// finished when the new secret is delivered: edges learn of it within
// revocation_delay (default 30s), the AWS sink only then moves AWSCURRENT,
// and the cut-over waits for every caller to move before it revokes the
// old secret. A schedule shorter than a minute would start the next
// rotation while the last one is still propagating, and with two active
// secrets at most it would either be refused or cut callers off.
const MinRotateEvery = time.Minute

// Config is a client's sink as the management API takes and answers it:
//
//	{"kind": "webhook", "url": "https://…", "public_key": {JWK}, "rotate_every": "90d"}
//	{"kind": "aws_secrets_manager", "secret_id": "…", "region": "…", "endpoint": "…", "rotate_every": "90d"}
//
// Fields of the other kind must be absent. Validate checks it.
type Config struct {
	// Kind is KindWebhook or KindAWSSecretsManager.
	Kind string `json:"kind"`

	// URL receives the webhook sink's POSTs: https, or plain http to a
	// loopback address only (tests, sidecars). Webhook only.
	URL string `json:"url,omitempty"`

	// PublicKey is the JWK (EC P-256, public part only) each secret is
	// encrypted to; its kid, when it has one, names it in the JWE header.
	// It is kept as given. Webhook only.
	PublicKey json.RawMessage `json:"public_key,omitempty"`

	// SecretID names the AWS secret: its name or ARN. It must exist; the
	// control plane only adds versions to it. AWS only.
	SecretID string `json:"secret_id,omitempty"`

	// Region is the AWS region of the secret. AWS only.
	Region string `json:"region,omitempty"`

	// Endpoint replaces the Secrets Manager endpoint (a VPC endpoint, an
	// emulator): https, or plain http to a loopback address. AWS only.
	// Default: the region's public endpoint.
	Endpoint string `json:"endpoint,omitempty"`

	// RotateEvery, when set, rotates the client's secret through the sink
	// once its newest active secret is older than this: a Go duration or
	// a number of days ("90d"), at least MinRotateEvery. Default: no
	// scheduled rotation.
	RotateEvery string `json:"rotate_every,omitempty"`
}

// FieldError is a Config that Validate refused, with the field at fault
// (as named in JSON) and why. It never quotes a key or a secret.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

func fieldErr(field, format string, args ...any) error {
	return &FieldError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// Validate checks c; the first problem found is a *FieldError.
func (c Config) Validate() error {
	switch c.Kind {
	case KindWebhook:
		if err := c.onlyFields("url", "public_key"); err != nil {
			return err
		}
		if err := checkURL("url", c.URL); err != nil {
			return err
		}
		if _, err := c.publicKey(); err != nil {
			return err
		}
	case KindAWSSecretsManager:
		if err := c.onlyFields("secret_id", "region", "endpoint"); err != nil {
			return err
		}
		if err := c.checkAWS(); err != nil {
			return err
		}
	case "":
		return fieldErr("kind", "is required (%s or %s)", KindWebhook, KindAWSSecretsManager)
	default:
		return fieldErr("kind", "unknown kind %q (known: %s, %s)", c.Kind, KindWebhook, KindAWSSecretsManager)
	}
	_, err := c.RotationPeriod()
	return err
}

// onlyFields refuses a field of another kind than c's, so that a config
// mixing the two is an error rather than half ignored.
func (c Config) onlyFields(allowed ...string) error {
	set := map[string]bool{
		"url":        c.URL != "",
		"public_key": len(c.PublicKey) > 0,
		"secret_id":  c.SecretID != "",
		"region":     c.Region != "",
		"endpoint":   c.Endpoint != "",
	}
	for _, f := range []string{"url", "public_key", "secret_id", "region", "endpoint"} {
		if set[f] && !slices.Contains(allowed, f) {
			return fieldErr(f, "is not a field of a %s sink", c.Kind)
		}
	}
	return nil
}

// RotationPeriod returns rotate_every as a duration: 0 when it is unset,
// an error when it is not a positive duration of at least MinRotateEvery.
func (c Config) RotationPeriod() (time.Duration, error) {
	if c.RotateEvery == "" {
		return 0, nil
	}
	d, err := caddy.ParseDuration(c.RotateEvery)
	if err != nil {
		return 0, fieldErr("rotate_every", "not a duration (e.g. \"90d\", \"720h\")")
	}
	if d < MinRotateEvery {
		return 0, fieldErr("rotate_every", "must be at least %s: a rotation needs time to reach every edge and every caller before the next one starts", MinRotateEvery)
	}
	return d, nil
}

// checkURL accepts an absolute https URL, or an http URL whose host is a
// loopback address; never user info (it would travel in every request) nor
// a fragment.
func checkURL(field, raw string) error {
	if raw == "" {
		return fieldErr(field, "is required")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || u.Opaque != "" {
		return fieldErr(field, "must be an absolute https URL")
	}
	if u.User != nil {
		return fieldErr(field, "must not hold user info")
	}
	if u.Fragment != "" {
		return fieldErr(field, "must not have a fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fieldErr(field, "must be https (plain http only to a loopback address: 127.0.0.0/8, ::1, localhost)")
	default:
		return fieldErr(field, "must be an https URL")
	}
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// jwkHeader is the part of a JWK read before go-jose parses it, to refuse
// what go-jose would accept but a sink must not take.
type jwkHeader struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	Use string `json:"use"`
	Alg string `json:"alg"`
}

// privateMembers are the JWK members that only a private or symmetric key
// has (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
var privateMembers = []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"}

// publicKey parses and checks the webhook sink's JWK: an EC P-256 public
// key on its curve, meant for encryption.
func (c Config) publicKey() (*jose.JSONWebKey, error) {
	const field = "public_key"
	if len(c.PublicKey) == 0 {
		return nil, fieldErr(field, "is required (a JWK: an EC P-256 public key)")
	}
	var members map[string]json.RawMessage
	var h jwkHeader
	if json.Unmarshal(c.PublicKey, &members) != nil || json.Unmarshal(c.PublicKey, &h) != nil {
		return nil, fieldErr(field, "must be a JWK (a JSON object)")
	}
	for _, m := range privateMembers {
		if _, ok := members[m]; ok {
			if h.Kty == "oct" {
				return nil, fieldErr(field, "is a symmetric (oct) key; give the receiver's EC P-256 public key")
			}
			return nil, fieldErr(field, "is a private key (it has %q); give the public key only, and keep the private key at the receiver", m)
		}
	}
	switch {
	case h.Kty == "EC" && h.Crv == "P-256":
	case h.Kty == "OKP" && h.Crv == "X25519":
		// go-jose v4 has no X25519 key agreement (go-jose/go-jose#113), and
		// this package does not hand-write JOSE.
		return nil, fieldErr(field, "OKP X25519 keys are not supported yet; use an EC P-256 key")
	case h.Kty == "EC":
		return nil, fieldErr(field, "curve %q is not accepted; use an EC P-256 key", h.Crv)
	case h.Kty == "OKP":
		return nil, fieldErr(field, "OKP curve %q is not accepted; use an EC P-256 key", h.Crv)
	case h.Kty == "oct":
		return nil, fieldErr(field, "is a symmetric (oct) key; give the receiver's EC P-256 public key")
	case h.Kty == "":
		return nil, fieldErr(field, "has no \"kty\"; give an EC P-256 public key")
	default:
		return nil, fieldErr(field, "key type %q is not accepted; use an EC P-256 key", h.Kty)
	}
	if h.Use != "" && h.Use != "enc" {
		return nil, fieldErr(field, "\"use\" is %q; a key for encryption has \"use\": \"enc\" or none", h.Use)
	}
	if h.Alg != "" && h.Alg != string(jose.ECDH_ES_A256KW) {
		return nil, fieldErr(field, "\"alg\" is %q; the sink encrypts with %s", h.Alg, jose.ECDH_ES_A256KW)
	}
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(c.PublicKey); err != nil || !k.Valid() || !k.IsPublic() {
		return nil, fieldErr(field, "is not a valid EC P-256 public key (coordinates missing or not on the curve)")
	}
	return &k, nil
}

// awsRegion matches the names of AWS regions (us-east-1, us-gov-west-1,
// cn-north-1, eu-isoe-west-1 …).
var awsRegion = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)

// awsSecretName matches the names Secrets Manager accepts.
var awsSecretName = regexp.MustCompile(`^[A-Za-z0-9/_+=.@-]{1,512}$`)

func (c Config) checkAWS() error {
	if c.SecretID == "" {
		return fieldErr("secret_id", "is required (the AWS secret's name or ARN)")
	}
	if c.Region == "" {
		return fieldErr("region", "is required (e.g. us-east-1)")
	}
	if !awsRegion.MatchString(c.Region) {
		return fieldErr("region", "%q is not an AWS region name (e.g. us-east-1)", c.Region)
	}
	// arn:<partition>:secretsmanager:<region>:<account>:secret:<name>
	if parts := strings.SplitN(c.SecretID, ":", 6); len(parts) == 6 && parts[0] == "arn" {
		if parts[2] != "secretsmanager" {
			return fieldErr("secret_id", "is an ARN of service %q, not secretsmanager", parts[2])
		}
		if parts[3] != c.Region {
			return fieldErr("secret_id", "is an ARN in region %q, but region is %q", parts[3], c.Region)
		}
		if len(c.SecretID) > 2048 {
			return fieldErr("secret_id", "is an ARN longer than 2048 characters")
		}
	} else if !awsSecretName.MatchString(c.SecretID) {
		return fieldErr("secret_id", "is not an AWS secret name (up to 512 of A-Z a-z 0-9 / _ + = . @ -) nor an ARN")
	}
	if c.Endpoint != "" {
		if err := checkURL("endpoint", c.Endpoint); err != nil {
			return err
		}
	}
	return nil
}
