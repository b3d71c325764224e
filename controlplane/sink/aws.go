package sink

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/logging"
)

// The AWS Secrets Manager sink follows AWS's rotation protocol on a secret
// that already exists: the new value goes in as a version labelled
// AWSPENDING (PutPending), and once edges accept the new secret it becomes
// AWSCURRENT, the value it replaces AWSPREVIOUS (Promote). Consumers read
// AWSCURRENT, as AWS's own clients and caches do.

// AWS's staging labels.
const (
	AWSPending  = "AWSPENDING"
	AWSCurrent  = "AWSCURRENT"
	AWSPrevious = "AWSPREVIOUS"
)

// Value is what a version of the AWS secret holds, as JSON.
type Value struct {
	ClientID     string `json:"client_id"`
	ClientSecret string `json:"client_secret"`
	SecretID     string `json:"secret_id"`
}

// AWS is a Secrets Manager sink, ready to write to its secret. It holds no
// credentials: the SDK's default chain finds them (environment, shared
// config, web identity, container or instance role) when a call needs
// them, and rotagate never stores nor logs them.
type AWS struct {
	client   *secretsmanager.Client
	secretID string
}

// NewAWS returns the sink c (of kind aws_secrets_manager) ready to use.
func NewAWS(ctx context.Context, c Config) (*AWS, error) {
	if c.Kind != KindAWSSecretsManager {
		return nil, fmt.Errorf("aws_secrets_manager: a %s sink is not an AWS one", c.Kind)
	}
	if err := c.checkAWS(); err != nil {
		return nil, err
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(c.Region))
	if err != nil {
		return nil, fmt.Errorf("aws_secrets_manager: loading the AWS configuration: %w", err)
	}
	client := secretsmanager.NewFromConfig(cfg, func(o *secretsmanager.Options) {
		if c.Endpoint != "" {
			o.BaseEndpoint = aws.String(c.Endpoint)
		}
		// Requests carry the plaintext: the SDK must never log them,
		// whatever the shared configuration asks for.
		o.ClientLogMode = 0
		o.Logger = logging.Nop{}
	})
	return &AWS{client: client, secretID: c.SecretID}, nil
}

// ClientRequestToken returns the ClientRequestToken (and so the version
// id) of the value of rotagate secret secretID at delivery attempt
// attempt: a UUID (RFC 9562 version 8) made from a SHA-256 of the two, so
// a retry of the same attempt sends the same token and AWS applies it once,
// while another attempt or another secret gets another version. AWS refuses
// a known token with a different value, so each attempt must send one
// value only.
func ClientRequestToken(secretID string, attempt int) string {
	sum := sha256.Sum256([]byte("rotagate aws_secrets_manager sink v1\x00" + secretID + "\x00" + strconv.Itoa(attempt)))
	b := sum[:16]
	b[6] = b[6]&0x0f | 0x80 // version 8: custom
	b[8] = b[8]&0x3f | 0x80 // variant 10: RFC 9562
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// PutPending adds v to the secret as a new version labelled AWSPENDING
// (taking the label from any older version that had it) and returns the
// version id. attempt numbers the delivery attempt of v.SecretID: a retry
// of one attempt with the same v is idempotent. The error never holds
// v.ClientSecret.
func (a *AWS) PutPending(ctx context.Context, v Value, attempt int) (string, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return "", errors.New("aws_secrets_manager: encoding the value failed")
	}
	token := ClientRequestToken(v.SecretID, attempt)
	out, err := a.client.PutSecretValue(ctx, &secretsmanager.PutSecretValueInput{
		SecretId:           aws.String(a.secretID),
		ClientRequestToken: aws.String(token),
		SecretString:       aws.String(string(body)),
		VersionStages:      []string{AWSPending},
	})
	if err != nil {
		return "", sdkError("PutSecretValue", err, v.ClientSecret)
	}
	if id := aws.ToString(out.VersionId); id != token {
		return "", fmt.Errorf("aws_secrets_manager: PutSecretValue answered version %q for token %q", id, token)
	}
	return token, nil
}

// Promote makes version (as PutPending returned it) AWSCURRENT: the
// version that was current becomes AWSPREVIOUS, and the version loses
// AWSPENDING. Calling it again after a success, or after a failure half
// way, finishes the move. It refuses a version that is neither current
// nor pending: a newer rotation has replaced it.
func (a *AWS) Promote(ctx context.Context, version string) error {
	d, err := a.client.DescribeSecret(ctx, &secretsmanager.DescribeSecretInput{SecretId: aws.String(a.secretID)})
	if err != nil {
		return sdkError("DescribeSecret", err, "")
	}
	stages, ok := d.VersionIdsToStages[version]
	if !ok {
		return fmt.Errorf("aws_secrets_manager: the secret has no version %s", version)
	}
	if !slices.Contains(stages, AWSCurrent) {
		if !slices.Contains(stages, AWSPending) {
			return fmt.Errorf("aws_secrets_manager: version %s is no longer %s; a newer rotation replaced it", version, AWSPending)
		}
		in := &secretsmanager.UpdateSecretVersionStageInput{
			SecretId:        aws.String(a.secretID),
			VersionStage:    aws.String(AWSCurrent),
			MoveToVersionId: aws.String(version),
		}
		for id, s := range d.VersionIdsToStages {
			if slices.Contains(s, AWSCurrent) {
				in.RemoveFromVersionId = aws.String(id)
			}
		}
		if _, err := a.client.UpdateSecretVersionStage(ctx, in); err != nil {
			return sdkError("UpdateSecretVersionStage", err, "")
		}
	}
	if slices.Contains(stages, AWSPending) {
		_, err := a.client.UpdateSecretVersionStage(ctx, &secretsmanager.UpdateSecretVersionStageInput{
			SecretId:            aws.String(a.secretID),
			VersionStage:        aws.String(AWSPending),
			RemoveFromVersionId: aws.String(version),
		})
		if err != nil {
			return sdkError("UpdateSecretVersionStage", err, "")
		}
	}
	return nil
}

// Error is a failed call to Secrets Manager. It never holds the value
// sent: the SDK's text (which may quote what the endpoint answered, and an
// endpoint may echo the request) is kept only when it quotes no part of
// the secret. Context errors unwrap to context.Canceled or
// context.DeadlineExceeded.
type Error struct {
	// Op is the Secrets Manager action, e.g. PutSecretValue.
	Op string
	// Code is the AWS error code (e.g. ResourceNotFoundException,
	// AccessDeniedException), empty when no answer came.
	Code string

	text  string
	cause error
}

func (e *Error) Error() string { return "aws_secrets_manager: " + e.Op + ": " + e.text }

func (e *Error) Unwrap() error { return e.cause }

// maxErrorText bounds the SDK text an Error keeps.
const maxErrorText = 1024

func sdkError(op string, err error, secret string) error {
	e := &Error{Op: op, text: err.Error()}
	var api smithy.APIError
	if errors.As(err, &api) && !quotes(api.ErrorCode(), secret) {
		e.Code = api.ErrorCode()
	}
	for _, c := range []error{context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, c) {
			e.cause = c
		}
	}
	if quotes(e.text, secret) {
		e.text = "the error text is withheld: it quoted part of the secret value"
		if e.Code != "" {
			e.text = e.Code + ": " + e.text
		}
	}
	if len(e.text) > maxErrorText {
		e.text = e.text[:maxErrorText] + "…"
	}
	return e
}

// quoteWindow is the shortest run of a secret's characters that counts as
// quoting it. Generated secrets are a prefix (rgs_ by default) and base62
// digits, so 8 of them in a row past a default prefix hold at least 4
// random digits; a window inside a long custom prefix only makes us
// withhold more than needed.
const quoteWindow = 8

// quotes reports whether text holds any quoteWindow characters of secret
// in a row (all of secret when it is shorter).
func quotes(text, secret string) bool {
	if secret == "" {
		return false
	}
	n := min(quoteWindow, len(secret))
	for i := 0; i+n <= len(secret); i++ {
		if strings.Contains(text, secret[i:i+n]) {
			return true
		}
	}
	return false
}
