package rules

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/rotagate/rotagate/controlplane/sink"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/internal/secrethash"
)

// Secrets: generate, import, rotate, revoke.

// GenerateOptions choose what GenerateSecret adds. At most one of
// ImportHash, ImportSecret, PublicKey and Certificate may be set; with
// none, a secret is generated.
type GenerateOptions struct {
	// ExpiresIn schedules the expiry of the new secret; 0 means never.
	ExpiresIn time.Duration
	// ImportHash is a bcrypt, argon2id or PBKDF2 hash of a legacy secret.
	ImportHash string
	// ImportSecret is a plaintext legacy secret, hashed with argon2id
	// before it is stored.
	ImportSecret string
	// PublicKey is a public JWK to register for private_key_jwt (SPEC
	// §16); Certificate a PEM certificate for tls_client_auth.
	PublicKey   []byte
	Certificate string
}

// kind is the kind of credential the options add.
func (o *GenerateOptions) kind() store.Kind {
	switch {
	case o.PublicKey != nil:
		return store.KindPublicKey
	case o.Certificate != "":
		return store.KindCertificate
	}
	return store.KindSecret
}

// CreatedSecret is the result of adding a secret.
type CreatedSecret struct {
	// Secret is the stored metadata of the new secret.
	Secret store.Secret
	// Plaintext is the generated secret, shown once; empty for imports.
	Plaintext string
	// Expiring lists the other secrets a rotation scheduled to expire.
	Expiring []string
	// Revoked lists the other secrets a rotation with no grace revoked.
	Revoked []string
	// Warnings describe what may keep an imported plaintext secret from
	// working with some clients. They never quote the secret.
	Warnings []string
	// DeliveredTo is the kind of the client's sink when the secret went
	// to it; Plaintext is then empty (sinks.go).
	DeliveredTo string
	// staged is the new secret's value already put at an AWS sink, before
	// the transaction that stores it.
	staged *stagedPut
}

// GenerateSecret adds a generated or imported secret to a client, unless
// the client is already at max_active_secrets (ErrTooManyActive).
func (s *Service) GenerateSecret(ctx context.Context, who Actor, clientID string, opts GenerateOptions) (ns CreatedSecret, err error) {
	action := "secret.generate"
	if opts.ImportHash != "" || opts.ImportSecret != "" {
		action = "secret.import"
	}
	defer func() {
		if len(ns.Warnings) > 0 {
			s.logAt(zapcore.WarnLevel, who, action, clientID, ns.Secret.ID, err, zap.Strings("warnings", ns.Warnings))
			return
		}
		s.log(who, action, clientID, ns.Secret.ID, err)
	}()
	if action == "secret.import" && !who.Admin {
		return CreatedSecret{}, ErrForbidden
	}
	if err := ValidateClientID(clientID); err != nil {
		return CreatedSecret{}, invalidError(err.Error())
	}
	if opts.ExpiresIn < 0 {
		return CreatedSecret{}, invalidf("expires_in must not be negative")
	}
	ns, err = s.newSecret(ctx, who, clientID, opts, s.maxActive)
	if err != nil {
		return CreatedSecret{}, err
	}
	if at := ns.Secret.CreatedAt.Add(opts.ExpiresIn); opts.ExpiresIn > 0 && (ns.Secret.ExpiresAt == nil || at.Before(*ns.Secret.ExpiresAt)) {
		ns.Secret.ExpiresAt = &at // a certificate's own end may come sooner
	}
	to, err := update(ctx, s, func(tx store.Tx) (string, error) {
		added, err := s.addSecret(ctx, tx, who, ns, s.maxActive, nil)
		if err != nil {
			return "", err
		}
		data := map[string]any{"imported": action == "secret.import", "kind": ns.Secret.Kind}
		if ns.Secret.ExpiresAt != nil {
			data["expires_at"] = *ns.Secret.ExpiresAt
		}
		if added.deliveredTo != "" {
			data["delivered_to"] = added.deliveredTo
		}
		if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretGenerated, ClientID: clientID,
			SecretID: ns.Secret.ID, Hint: ns.Secret.Hint, Data: data}); err != nil {
			return "", err
		}
		detail := credentialDetail(ns.Secret)
		if opts.ExpiresIn > 0 {
			detail = strings.TrimPrefix(detail+"; expires in "+HumanDuration(opts.ExpiresIn), "; ")
		}
		return added.deliveredTo, s.record(ctx, tx, who, action, clientID, ns.Secret.ID, sinkDetail(detail, added.deliveredTo))
	})
	if err != nil {
		return CreatedSecret{Secret: store.Secret{ID: ns.Secret.ID}}, err
	}
	return s.handedOver(ns, to), nil
}

// RotateSecret adds a generated secret and, in the same transaction, sets
// expires_at = min(current, now+grace) on every other active secret. A
// zero grace revokes them at once and is always allowed; a positive grace
// with the client at max_active_secrets is ErrTooManyActive.
//
// With a webhook sink, the others are left as they are until the sink
// acknowledges the new secret (SinkDelivered applies the grace then), so
// that a sink that is down never leaves the client rotated half-way.
func (s *Service) RotateSecret(ctx context.Context, who Actor, clientID string, grace time.Duration) (CreatedSecret, error) {
	return s.rotate(ctx, who, clientID, grace, GenerateOptions{}, time.Time{})
}

// RotateCredential is RotateSecret with the new credential chosen by opts:
// a generated secret, or a public key or certificate to register (opts'
// ExpiresIn and imports do not apply to a rotation).
func (s *Service) RotateCredential(ctx context.Context, who Actor, clientID string, grace time.Duration, opts GenerateOptions) (CreatedSecret, error) {
	return s.rotate(ctx, who, clientID, grace, opts, time.Time{})
}

// rotate is RotateCredential; with a non-zero dueBefore it rotates only
// when the client's newest active secret was created at or before
// dueBefore (checked under the client's lock: replicas on one database
// rotate a client once), else it answers errNotDue.
func (s *Service) rotate(ctx context.Context, who Actor, clientID string, grace time.Duration, opts GenerateOptions, dueBefore time.Time) (ns CreatedSecret, err error) {
	defer func() {
		if errors.Is(err, errNotDue) {
			return
		}
		s.log(who, "secret.rotate", clientID, ns.Secret.ID, err,
			zap.Duration("grace", grace), zap.Strings("expiring", ns.Expiring), zap.Strings("revoked", ns.Revoked))
	}()
	if err := ValidateClientID(clientID); err != nil {
		return CreatedSecret{}, invalidError(err.Error())
	}
	if grace < 0 {
		return CreatedSecret{}, invalidf("grace must not be negative")
	}
	room := s.maxActive // with a grace, the others stay active a while
	if grace == 0 {
		room = math.MaxInt // they are revoked in the transaction
	}
	ns, err = s.newSecret(ctx, who, clientID, GenerateOptions{PublicKey: opts.PublicKey, Certificate: opts.Certificate}, room)
	if err != nil {
		return CreatedSecret{}, err
	}
	now := ns.Secret.CreatedAt
	until := now.Add(grace)
	type others struct {
		expiring, revoked []string
		deliveredTo       string
	}
	res, err := update(ctx, s, func(tx store.Tx) (others, error) {
		res := others{expiring: []string{}}
		added, err := s.addSecret(ctx, tx, who, ns, room, &grace)
		if err != nil {
			return res, err
		}
		active := added.active
		if !dueBefore.IsZero() && slices.ContainsFunc(active, func(o store.Secret) bool { return o.CreatedAt.After(dueBefore) }) {
			return res, errNotDue
		}
		res.deliveredTo = added.deliveredTo
		if added.deferred {
			active = nil // SinkDelivered expires or revokes them
		}
		for _, old := range active {
			switch {
			case grace == 0:
				if err := tx.Revoke(ctx, old.ID, now); err != nil {
					return res, err
				}
				res.revoked = append(res.revoked, old.ID)
			case old.ExpiresAt == nil || until.Before(*old.ExpiresAt):
				if err := tx.SetExpiry(ctx, old.ID, until); err != nil {
					return res, err
				}
				res.expiring = append(res.expiring, old.ID)
			default: // already expires sooner: keep it
				res.expiring = append(res.expiring, old.ID)
			}
		}
		data := map[string]any{"grace_seconds": int64(grace / time.Second), "expiring": res.expiring, "revoked": append([]string{}, res.revoked...)}
		if added.deliveredTo != "" {
			data["delivered_to"] = added.deliveredTo
			data["grace_after_delivery"] = added.deferred
		}
		if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretRotated, ClientID: clientID, SecretID: ns.Secret.ID, Hint: ns.Secret.Hint,
			Data: data}); err != nil {
			return res, err
		}
		for _, old := range active {
			if grace > 0 {
				break // expiring, not revoked: reminders and secret.expired will tell
			}
			if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretRevoked, ClientID: clientID, SecretID: old.ID, Hint: old.Hint,
				Data: map[string]any{"revoked_at": now, "reason": "rotation"}}); err != nil {
				return res, err
			}
		}
		detail := "grace none"
		if grace > 0 {
			detail = "grace " + HumanDuration(grace)
		}
		detail = strings.TrimPrefix(credentialDetail(ns.Secret)+"; "+detail, "; ")
		if len(res.expiring) > 0 {
			detail += "; expiring " + strings.Join(res.expiring, ", ")
		}
		if len(res.revoked) > 0 {
			detail += "; revoked " + strings.Join(res.revoked, ", ")
		}
		if added.deferred {
			detail += "; the others follow once the sink acknowledges the secret"
		}
		return res, s.record(ctx, tx, who, "secret.rotate", clientID, ns.Secret.ID, sinkDetail(detail, res.deliveredTo))
	})
	if err != nil {
		return CreatedSecret{Secret: store.Secret{ID: ns.Secret.ID}}, err
	}
	ns.Expiring, ns.Revoked = res.expiring, res.revoked
	return s.handedOver(ns, res.deliveredTo), nil
}

// RevokeSecret revokes one secret of a client at once. Revoking a revoked
// secret changes nothing. The secret stays listed, with status revoked.
func (s *Service) RevokeSecret(ctx context.Context, who Actor, clientID, secretID string) (sec store.Secret, err error) {
	defer func() { s.log(who, "secret.revoke", clientID, secretID, err) }()
	if err := ValidateClientID(clientID); err != nil {
		return store.Secret{}, invalidError(err.Error())
	}
	if !validSecretID(secretID) {
		return store.Secret{}, invalidf("secret id must be %s followed by %d base62 characters", secretIDPrefix, idRandLen)
	}
	now := s.Now()
	return update(ctx, s, func(tx store.Tx) (store.Secret, error) {
		secrets, err := managedSecrets(ctx, tx, who, clientID)
		if err != nil {
			return store.Secret{}, err
		}
		for _, sec := range secrets {
			if sec.ID != secretID {
				continue
			}
			if sec.RevokedAt != nil {
				return sec, nil
			}
			sec.RevokedAt = &now
			if err := tx.Revoke(ctx, secretID, now); err != nil {
				return store.Secret{}, err
			}
			if err := s.enqueue(ctx, tx, Event{Type: store.EventSecretRevoked, ClientID: clientID, SecretID: secretID, Hint: sec.Hint,
				Data: map[string]any{"revoked_at": now, "reason": "revoke"}}); err != nil {
				return store.Secret{}, err
			}
			return sec, s.record(ctx, tx, who, "secret.revoke", clientID, secretID, "")
		}
		return store.Secret{}, store.ErrNotFound
	})
}

// MaxLabelLength bounds a secret's label, in characters.
const MaxLabelLength = 100

// LabelSecret sets the label of a secret: which app has it, in the
// owners' words (empty clears it). A label is printable text of at most
// MaxLabelLength characters, and never a generated secret pasted in the
// wrong field.
func (s *Service) LabelSecret(ctx context.Context, who Actor, clientID, secretID, label string) (sec store.Secret, err error) {
	defer func() { s.log(who, "secret.label", clientID, secretID, err) }()
	if err := ValidateClientID(clientID); err != nil {
		return store.Secret{}, invalidError(err.Error())
	}
	if !validSecretID(secretID) {
		return store.Secret{}, invalidf("secret id must be %s followed by %d base62 characters", secretIDPrefix, idRandLen)
	}
	label = strings.TrimSpace(label)
	switch {
	case !utf8.ValidString(label) || strings.IndexFunc(label, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return store.Secret{}, invalidf("label must be printable text")
	case utf8.RuneCountInString(label) > MaxLabelLength:
		return store.Secret{}, invalidf("label must be at most %d characters", MaxLabelLength)
	case CheckSecret(label, s.prefix):
		return store.Secret{}, invalidf("label must say which app has the secret, not be the secret")
	}
	return update(ctx, s, func(tx store.Tx) (store.Secret, error) {
		secrets, err := managedSecrets(ctx, tx, who, clientID)
		if err != nil {
			return store.Secret{}, err
		}
		i := slices.IndexFunc(secrets, func(sec store.Secret) bool { return sec.ID == secretID })
		if i < 0 {
			return store.Secret{}, store.ErrNotFound
		}
		if err := tx.SetLabel(ctx, secretID, label); err != nil {
			return store.Secret{}, err
		}
		secrets[i].Label = label
		return secrets[i], s.record(ctx, tx, who, "secret.label", clientID, secretID, "label: "+label)
	})
}

// addSecret is where generate, import and rotate meet: inside the
// caller's transaction it locks a client the actor may manage, checks
// that the new secret finds room beside the client's active secrets (at
// most room-1 of them), and stores the secret prepared by newSecret. It
// returns the other secrets active then, for a rotation to expire or
// revoke. Whatever must happen to every new secret, in the transaction
// that adds it, happens here: the client's sink, when it has one, takes
// the plaintext (toSink). grace is a rotation's (nil for generate): with a
// webhook sink it waits for the sink's acknowledgement (deferred).
func (s *Service) addSecret(ctx context.Context, tx store.Tx, who Actor, ns CreatedSecret, room int, grace *time.Duration) (added, error) {
	clientID, now := ns.Secret.ClientID, ns.Secret.CreatedAt
	secrets, err := managedSecrets(ctx, tx, who, clientID)
	if err != nil {
		return added{}, err
	}
	k, err := tx.Sink(ctx, clientID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return added{}, err
	}
	hasSink := err == nil && ns.Secret.Kind == store.KindSecret // a key or certificate has nothing to deliver
	deferred := hasSink && k.Kind == sink.KindWebhook && grace != nil
	if deferred {
		room = min(room, s.maxActive) // the others stay active until delivery
	}
	active := secrets[:0]
	for _, sec := range secrets {
		if sec.Active(now) {
			active = append(active, sec)
		}
	}
	if err := checkNewThumbprint(active, ns.Secret); err != nil {
		return added{}, err
	}
	if len(active) >= room {
		return added{}, ErrTooManyActive
	}
	if err := tx.InsertSecret(ctx, ns.Secret); err != nil {
		return added{}, err
	}
	out := added{active: active, deferred: deferred}
	if !hasSink {
		if ns.staged != nil {
			return added{}, errSinkChanged
		}
		return out, nil
	}
	if !deferred {
		grace = nil
	}
	out.deliveredTo, err = s.toSink(ctx, tx, k, ns, grace)
	return out, err
}

// lockManaged locks, inside tx, a client the actor may manage; one the
// actor may not manage is ErrNotFound, as if it did not exist.
func lockManaged(ctx context.Context, tx store.Tx, who Actor, clientID string) (store.Client, error) {
	c, err := tx.LockClient(ctx, clientID)
	if err != nil {
		return store.Client{}, err
	}
	if !who.mayManage(c) {
		return store.Client{}, store.ErrNotFound
	}
	return c, nil
}

// managedSecrets locks, inside tx, a client the actor may manage and
// reads its secrets.
func managedSecrets(ctx context.Context, tx store.Tx, who Actor, clientID string) ([]store.Secret, error) {
	if _, err := lockManaged(ctx, tx, who, clientID); err != nil {
		return nil, err
	}
	return tx.Secrets(ctx, clientID)
}

// added is what addSecret found and did.
type added struct {
	// active are the client's other active secrets.
	active []store.Secret
	// deliveredTo is the kind of the sink that took the secret, if any.
	deliveredTo string
	// deferred: the rotation's grace waits for the sink's acknowledgement.
	deferred bool
}

// newSecret prepares the record (and, when generated, the plaintext) of a
// secret, outside any transaction: argon2id hashing takes real time, and
// so does putting the value at an AWS sink (stageAtSink), which must
// succeed before the secret is stored. room is addSecret's.
func (s *Service) newSecret(ctx context.Context, who Actor, clientID string, opts GenerateOptions, room int) (CreatedSecret, error) {
	ns, err := s.prepareSecret(clientID, opts)
	if err != nil {
		return CreatedSecret{}, err
	}
	if ns.staged, err = s.stageAtSink(ctx, who, ns, room); err != nil {
		return CreatedSecret{Secret: store.Secret{ID: ns.Secret.ID}}, err
	}
	return ns, nil
}

// prepareSecret makes the record and, when generated, the plaintext.
func (s *Service) prepareSecret(clientID string, opts GenerateOptions) (CreatedSecret, error) {
	id, err := NewSecretID()
	if err != nil {
		return CreatedSecret{}, err
	}
	ns := CreatedSecret{Secret: store.Secret{ID: id, ClientID: clientID, Kind: opts.kind(), CreatedAt: s.Now()}}
	given := 0
	for _, set := range []bool{opts.ImportHash != "", opts.ImportSecret != "", opts.PublicKey != nil, opts.Certificate != ""} {
		if set {
			given++
		}
	}
	switch {
	case opts.ImportHash != "" && opts.ImportSecret != "":
		return CreatedSecret{}, invalidf("import takes either hash or secret, not both")
	case given > 1:
		return CreatedSecret{}, invalidf("give one of import, public_key and certificate")
	case opts.PublicKey != nil:
		return ns, setPublicKey(&ns.Secret, opts.PublicKey)
	case opts.Certificate != "":
		return ns, setCertificate(&ns.Secret, opts.Certificate)
	case opts.ImportHash != "":
		h, err := secrethash.Parse(opts.ImportHash)
		if err != nil {
			return CreatedSecret{}, invalidf("import.hash: %v", err)
		}
		if !h.Scheme.Slow() {
			return CreatedSecret{}, invalidf("import.hash must be a bcrypt, argon2id or pbkdf2 hash")
		}
		if err := h.CheckImportCost(); err != nil {
			return CreatedSecret{}, invalidf("import.hash: %v", err)
		}
		ns.Secret.Hash = h.Encoded
		ns.Secret.Hint = "(imported " + h.Scheme.String() + ")"
	case opts.ImportSecret != "":
		if len(opts.ImportSecret) > MaxImportSecretLen {
			return CreatedSecret{}, invalidf("import.secret must be at most %d bytes", MaxImportSecretLen)
		}
		if ns.Secret.Hash, err = secrethash.NewArgon2id(opts.ImportSecret); err != nil {
			return CreatedSecret{}, err
		}
		ns.Secret.Hint = importedHint(opts.ImportSecret)
		ns.Warnings = importWarnings(opts.ImportSecret)
	default:
		if ns.Plaintext, err = NewSecret(s.prefix); err != nil {
			return CreatedSecret{}, err
		}
		ns.Secret.Hash = secrethash.NewSHA256(ns.Plaintext)
		ns.Secret.Hint = Hint(s.prefix, ns.Plaintext)
	}
	return ns, nil
}

// importWarnings says what may keep a plaintext legacy secret from
// working with some clients, without quoting it. RFC 6749 §2.3.1 has
// clients form-encode the secret before putting it in HTTP Basic auth;
// many (Python's authlib and requests-oauthlib among them) do not, and
// then send '+' and '%XX' as they are, which a conforming server decodes
// into something else. Appendix A allows only %x20-7E in a secret.
func importWarnings(secret string) []string {
	var out []string
	if strings.ContainsAny(secret, "+%") {
		out = append(out, "the secret contains '+' or '%': clients that put it in HTTP Basic auth without "+
			"form-encoding it (RFC 6749 §2.3.1) send it differently from clients that do; "+
			"the edge accepts both, but other gateways may not: prefer rotating to a generated secret")
	}
	for i := 0; i < len(secret); i++ {
		if secret[i] < 0x20 || secret[i] > 0x7e {
			out = append(out, "the secret has characters outside printable ASCII, which RFC 6749 (Appendix A) "+
				"does not allow in a client secret: clients may encode them differently; "+
				"check every client against the edge, or rotate to a generated secret")
			break
		}
	}
	return out
}
