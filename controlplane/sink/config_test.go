package sink

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/rotagate/rotagate/internal/testkeys"
)

// p256Key returns a fresh P-256 key and its public JWK as a receiver
// publishes it.
func p256Key(t *testing.T) (*ecdsa.PrivateKey, json.RawMessage) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k, testkeys.JWK(t, jose.JSONWebKey{Key: &k.PublicKey, KeyID: "receiver-1", Use: "enc"})
}

// jwkJSON marshals a key as a JWK.
func jwkJSON(t *testing.T, key any) json.RawMessage {
	t.Helper()
	return testkeys.JWK(t, jose.JSONWebKey{Key: key})
}

func TestValidate(t *testing.T) {
	ecPriv, ecPub := p256Key(t)
	privJWK := jwkJSON(t, ecPriv)
	xKey, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	x25519 := json.RawMessage(`{"kty":"OKP","crv":"X25519","x":"` + base64.RawURLEncoding.EncodeToString(xKey.PublicKey().Bytes()) + `"}`)
	// A P-256 public key whose y is not that of x: not on the curve.
	var offCurve map[string]any
	if err := json.Unmarshal(ecPub, &offCurve); err != nil {
		t.Fatal(err)
	}
	offCurve["y"] = offCurve["x"]
	offCurveJSON, _ := json.Marshal(offCurve)
	withMember := func(k, v string) json.RawMessage {
		var m map[string]any
		if err := json.Unmarshal(ecPub, &m); err != nil {
			t.Fatal(err)
		}
		m[k] = v
		b, _ := json.Marshal(m)
		return b
	}

	hook := func(url string, key json.RawMessage) Config {
		return Config{Kind: KindWebhook, URL: url, PublicKey: key}
	}
	awsSink := func(id, region, endpoint string) Config {
		return Config{Kind: KindAWSSecretsManager, SecretID: id, Region: region, Endpoint: endpoint}
	}
	every := func(c Config, d string) Config { c.RotateEvery = d; return c }
	const ok = ""
	for _, tc := range []struct {
		name  string
		cfg   Config
		field string // the field named in the error; ok when valid
		say   string // a part of the reason
	}{
		{"webhook https", hook("https://receiver.example/rotagate", ecPub), ok, ""},
		{"webhook http loopback v4", hook("http://127.0.0.1:8080/hook", ecPub), ok, ""},
		{"webhook http loopback 127/8", hook("http://127.3.2.1/hook", ecPub), ok, ""},
		{"webhook http loopback v6", hook("http://[::1]:9000/hook", ecPub), ok, ""},
		{"webhook http localhost", hook("http://LocalHost:9000/hook", ecPub), ok, ""},
		{"webhook with schedule", every(hook("https://r.example/", ecPub), "90d"), ok, ""},
		{"schedule of a minute", every(hook("https://r.example/", ecPub), "1m"), ok, ""},
		{"jwk use enc and alg", hook("https://r.example/", withMember("alg", "ECDH-ES+A256KW")), ok, ""},

		{"no kind", Config{URL: "https://r.example/"}, "kind", "required"},
		{"unknown kind", Config{Kind: "vault"}, "kind", `unknown kind "vault"`},
		{"no url", hook("", ecPub), "url", "required"},
		{"http elsewhere", hook("http://receiver.example/hook", ecPub), "url", "loopback"},
		{"http to a private address", hook("http://10.0.0.1/hook", ecPub), "url", "loopback"},
		{"other scheme", hook("ftp://receiver.example/", ecPub), "url", "https"},
		{"relative url", hook("/hook", ecPub), "url", "absolute"},
		{"user info", hook("https://u:p@receiver.example/", ecPub), "url", "user info"},
		{"fragment", hook("https://receiver.example/#x", ecPub), "url", "fragment"},
		{"no key", hook("https://r.example/", nil), "public_key", "required"},
		{"key not an object", hook("https://r.example/", json.RawMessage(`"abc"`)), "public_key", "JSON object"},
		{"private key", hook("https://r.example/", privJWK), "public_key", "private key"},
		{"symmetric key", hook("https://r.example/", json.RawMessage(`{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}`)), "public_key", "symmetric"},
		{"rsa key", hook("https://r.example/", jwkJSON(t, &testkeys.RSA(t, 2048, "").PublicKey)), "public_key", `"RSA"`},
		{"P-384 key", hook("https://r.example/", jwkJSON(t, &testkeys.ECDSA(t, elliptic.P384(), "").PublicKey)), "public_key", `"P-384"`},
		{"Ed25519 key", hook("https://r.example/", jwkJSON(t, testkeys.Ed25519(t, "").Public())), "public_key", `"Ed25519"`},
		{"X25519 key", hook("https://r.example/", x25519), "public_key", "X25519"},
		{"no kty", hook("https://r.example/", json.RawMessage(`{"crv":"P-256"}`)), "public_key", "kty"},
		{"signing key", hook("https://r.example/", withMember("use", "sig")), "public_key", `"use"`},
		{"other alg", hook("https://r.example/", withMember("alg", "ECDH-ES")), "public_key", `"alg"`},
		{"point off the curve", hook("https://r.example/", offCurveJSON), "public_key", "not a valid"},
		{"aws field in a webhook", Config{Kind: KindWebhook, URL: "https://r.example/", PublicKey: ecPub, Region: "us-east-1"}, "region", "not a field"},

		{"aws", awsSink("rotagate/billing", "us-east-1", ""), ok, ""},
		{"aws arn", awsSink("arn:aws:secretsmanager:eu-west-1:123456789012:secret:billing-AbCdEf", "eu-west-1", ""), ok, ""},
		{"aws emulator", awsSink("billing", "us-east-1", "http://127.0.0.1:5000"), ok, ""},
		{"aws vpc endpoint", awsSink("billing", "us-gov-west-1", "https://vpce-1.secretsmanager.us-gov-west-1.vpce.amazonaws.com"), ok, ""},
		{"aws no secret", awsSink("", "us-east-1", ""), "secret_id", "required"},
		{"aws bad secret name", awsSink("billing secret", "us-east-1", ""), "secret_id", "not an AWS secret name"},
		{"aws no region", awsSink("billing", "", ""), "region", "required"},
		{"aws bad region", awsSink("billing", "US East", ""), "region", "not an AWS region"},
		{"aws arn elsewhere", awsSink("arn:aws:secretsmanager:eu-west-1:123456789012:secret:b", "us-east-1", ""), "secret_id", `region "eu-west-1"`},
		{"aws arn of another service", awsSink("arn:aws:ssm:us-east-1:123456789012:parameter/b", "us-east-1", ""), "secret_id", "ssm"},
		{"aws http endpoint elsewhere", awsSink("billing", "us-east-1", "http://sm.example:5000"), "endpoint", "loopback"},
		{"webhook field in aws", Config{Kind: KindAWSSecretsManager, SecretID: "b", Region: "us-east-1", URL: "https://r.example/"}, "url", "not a field"},

		{"schedule not a duration", every(hook("https://r.example/", ecPub), "quarterly"), "rotate_every", "not a duration"},
		{"schedule too short", every(awsSink("b", "us-east-1", ""), "30s"), "rotate_every", "at least 1m0s"},
		{"schedule negative", every(hook("https://r.example/", ecPub), "-90d"), "rotate_every", "at least"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.field == ok {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate = %v, want a *FieldError on %s", err, tc.field)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Reason, tc.say) {
				t.Fatalf("Validate = %q, want field %s and a reason saying %q", err, tc.field, tc.say)
			}
			if !strings.HasPrefix(err.Error(), tc.field+": ") {
				t.Fatalf("the error %q does not start with the field's name", err)
			}
		})
	}

	// The private key's private part is never quoted.
	err = hook("https://r.example/", privJWK).Validate()
	d := base64.RawURLEncoding.EncodeToString(ecPriv.D.FillBytes(make([]byte, 32)))
	if err == nil || strings.Contains(err.Error(), d) {
		t.Fatalf("the error about a private key quotes it: %v", err)
	}
}

func TestRotationPeriod(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"":      0,
		"90d":   90 * 24 * time.Hour,
		"1d12h": 36 * time.Hour,
		"720h":  720 * time.Hour,
		"1m":    time.Minute,
	} {
		got, err := Config{RotateEvery: in}.RotationPeriod()
		if err != nil || got != want {
			t.Errorf("RotationPeriod(%q) = %s, %v; want %s", in, got, err, want)
		}
	}
}

// The API stores and answers a Config as JSON: what goes in comes out,
// the key as given, and no field of the other kind.
func TestConfigJSON(t *testing.T) {
	_, pub := p256Key(t)
	in := `{"kind":"webhook","url":"https://r.example/hook","public_key":` + string(pub) + `,"rotate_every":"90d"}`
	var c Config
	if err := json.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != in {
		t.Fatalf("round trip:\n got %s\nwant %s", out, in)
	}

	in = `{"kind":"aws_secrets_manager","secret_id":"rotagate/billing","region":"us-east-1","endpoint":"http://127.0.0.1:5000"}`
	c = Config{}
	if err := json.Unmarshal([]byte(in), &c); err != nil {
		t.Fatal(err)
	}
	if out, _ := json.Marshal(c); string(out) != in {
		t.Fatalf("round trip:\n got %s\nwant %s", out, in)
	}
}
