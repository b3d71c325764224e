// Package sinktest helps tests of the delivery sinks: an AWS Secrets
// Manager emulator (moto_server) on a port the kernel picks, and the
// environment and client to talk to it; and what a webhook sink's receiver
// does with a delivered secret.
package sinktest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/secretsmanager"
	"github.com/go-jose/go-jose/v4"
)

// OpenSecret decrypts the secret_jwe of a webhook sink's pending event
// with the receiver's private key, accepting only the algorithms the
// control plane uses (ECDH-ES+A256KW, A256GCM), as docs/sinks.md tells
// receivers to.
func OpenSecret(key *ecdsa.PrivateKey, jwe string) (string, error) {
	obj, err := jose.ParseEncryptedCompact(jwe, []jose.KeyAlgorithm{jose.ECDH_ES_A256KW}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return "", err
	}
	plain, err := obj.Decrypt(key)
	return string(plain), err
}

// AWSEnv points the AWS SDK's default chain at static test credentials
// and away from the user's AWS files, instance metadata and endpoints.
func AWSEnv(t *testing.T) {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_CONFIG_FILE", filepath.Join(dir, "config"))
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(dir, "credentials"))
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ENDPOINT_URL", "")
	t.Setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", "")
}

var motoListening = regexp.MustCompile(`Running on (http://127\.0\.0\.1:[0-9]+)`)

// StartMoto starts moto_server on a port the kernel picks, and returns its
// URL once it listens; it is killed when the test ends. Without moto_server
// the test is skipped, unless CI is set.
func StartMoto(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("moto_server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("moto_server is not on PATH")
		}
		t.Skip("moto_server is not on PATH")
	}
	out, w := io.Pipe()
	cmd := exec.Command(path, "-H", "127.0.0.1", "-p", "0")
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		w.Close()
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := motoListening.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
				break
			}
		}
		io.Copy(io.Discard, out)
	}()
	select {
	case u := <-found:
		return u
	case <-time.After(60 * time.Second):
		t.Fatal("moto_server did not say where it listens within a minute")
		return ""
	}
}

// AWSClient is a test's own view of the secrets, for setting up and
// for reading stages back.
func AWSClient(t *testing.T, endpoint string) *secretsmanager.Client {
	t.Helper()
	return secretsmanager.New(secretsmanager.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(endpoint),
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: "test", SecretAccessKey: "test"}, nil
		}),
	})
}
