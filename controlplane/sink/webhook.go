package sink

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/go-jose/go-jose/v4"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// The webhook sink: each new secret travels as a compact JWE encrypted to
// the sink's public key (only the receiver can read it, not the outbox
// that stores it nor anyone on the way), inside a Standard Webhooks event
// signed with the sink's own signing secret (so the receiver knows it
// comes from this control plane).

// JWE algorithms of the webhook sink: ECDH-ES key agreement with an
// ephemeral key, the content key wrapped with AES-256 key wrap, the secret
// sealed with AES-256-GCM.
const (
	KeyAlgorithm      = jose.ECDH_ES_A256KW
	ContentEncryption = jose.A256GCM
)

// Encrypt returns secret as a compact JWE to the webhook sink's public
// key. Its errors never hold the secret.
func (c Config) Encrypt(secret string) (string, error) {
	if c.Kind != KindWebhook {
		return "", fmt.Errorf("encrypt: a %s sink takes no JWE", c.Kind)
	}
	key, err := c.publicKey()
	if err != nil {
		return "", err
	}
	enc, err := jose.NewEncrypter(ContentEncryption, jose.Recipient{Algorithm: KeyAlgorithm, Key: key}, nil)
	if err != nil {
		return "", fmt.Errorf("encrypt: %w", err)
	}
	obj, err := enc.Encrypt([]byte(secret))
	if err != nil {
		return "", fmt.Errorf("encrypt: %w", err) // go-jose's errors are fixed texts
	}
	return obj.CompactSerialize()
}

// signingKeyLen is the length of a sink's signing key, in bytes: 256 bits,
// within the 24 to 64 bytes Standard Webhooks receivers accept.
const signingKeyLen = 32

// NewSigningSecret returns a fresh signing secret for a webhook sink, in
// the Standard Webhooks format (whsec_ and the standard base64 of the
// key). The control plane makes one when a sink is set and shows it once;
// the receiver verifies every event with it.
func NewSigningSecret() (string, error) {
	key := make([]byte, signingKeyLen)
	if _, err := rand.Read(key); err != nil {
		return "", err
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key), nil
}

// SignatureHeaders returns the Standard Webhooks headers (webhook-id,
// webhook-timestamp, webhook-signature) of body sent as message msgID at
// at, signed with signingSecret (as NewSigningSecret makes it). The error
// never quotes the secret.
func SignatureHeaders(signingSecret, msgID string, at time.Time, body []byte) (http.Header, error) {
	wh, err := standardwebhooks.NewWebhook(signingSecret)
	if err != nil {
		return nil, errors.New("sign: the signing secret is not a whsec_ secret")
	}
	sig, err := wh.Sign(msgID, at, body)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	h := http.Header{}
	h.Set(standardwebhooks.HeaderWebhookID, msgID)
	h.Set(standardwebhooks.HeaderWebhookTimestamp, strconv.FormatInt(at.Unix(), 10))
	h.Set(standardwebhooks.HeaderWebhookSignature, sig)
	return h, nil
}

// EventDelivered is the type of every webhook sink event: the new secret
// at stage pending, then each stage it moves to, without the secret.
const EventDelivered = "secret.delivered"

// Stage is where a delivered secret stands, in AWS's rotation terms.
type Stage string

const (
	// StagePending: delivered; edges accept it within revocation_delay.
	// Consumers may start using it once that has passed.
	StagePending Stage = "pending"
	// StageCurrent: the secret consumers should use.
	StageCurrent Stage = "current"
	// StagePrevious: replaced by a newer secret; the cut-over revokes it
	// once every caller has moved.
	StagePrevious Stage = "previous"
)

// Event is the data of a webhook sink event. Only a pending event carries
// the secret, and only as SecretJWE.
type Event struct {
	ClientID  string `json:"client_id"`
	SecretID  string `json:"secret_id"`
	Stage     Stage  `json:"stage"`
	SecretJWE string `json:"secret_jwe,omitempty"`
}

// Body returns the event's JSON body at time at:
//
//	{"type": "secret.delivered", "timestamp": "…", "data": {"client_id", "secret_id", "stage", "secret_jwe"}}
//
// A pending event must carry the JWE and the others must not.
func (e Event) Body(at time.Time) ([]byte, error) {
	switch e.Stage {
	case StagePending:
		if e.SecretJWE == "" {
			return nil, errors.New("event: a pending event carries the secret's JWE")
		}
	case StageCurrent, StagePrevious:
		if e.SecretJWE != "" {
			return nil, fmt.Errorf("event: a %s event carries no secret", e.Stage)
		}
	default:
		return nil, fmt.Errorf("event: unknown stage %q", e.Stage)
	}
	if e.ClientID == "" || e.SecretID == "" {
		return nil, errors.New("event: client_id and secret_id are required")
	}
	return json.Marshal(struct {
		Type      string    `json:"type"`
		Timestamp time.Time `json:"timestamp"`
		Data      Event     `json:"data"`
	}{EventDelivered, at.UTC(), e})
}
