package cptest

import (
	"context"
	"time"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"github.com/rotagate/rotagate/controlplane/store/storetest"
	"github.com/rotagate/rotagate/internal/wire"
)

// Rotation drives a client's rotation through the rules with the Env's
// clock.
type Rotation struct {
	*Env
	Ctx context.Context
}

// Use reports, as an edge's usage batch would, that ip used secret now.
func (k Rotation) Use(clientID, secretID, ip string) {
	k.T.Helper()
	u := wire.Usage{Edge: "e1", Stamps: []wire.Stamp{{ClientID: clientID, SecretID: secretID, LastUsedAt: k.Clock.Now(), From: ip}}}
	if _, err := k.Svc.ApplyUsage(k.Ctx, u); err != nil {
		k.T.Fatal(err)
	}
}

// Pass runs one cut-over pass.
func (k Rotation) Pass() rules.CutoverPass {
	k.T.Helper()
	p, err := k.Svc.RunCutover(k.Ctx)
	if err != nil {
		k.T.Fatal(err)
	}
	return p
}

// SetPolicy sets a client's cut-over policy.
func (k Rotation) SetPolicy(clientID string, p store.CutoverPolicy) {
	k.T.Helper()
	if _, err := k.Svc.SetCutover(k.Ctx, Root, clientID, p); err != nil {
		k.T.Fatal(err)
	}
}

// State is a client's cut-over state.
func (k Rotation) State(clientID string) rules.CutoverState {
	k.T.Helper()
	st, err := k.Svc.GetCutover(k.Ctx, Root, clientID)
	if err != nil {
		k.T.Fatal(err)
	}
	return st
}

// Events returns the data of the stored events of type typ, oldest first.
func (k Rotation) Events(typ string) []map[string]any {
	k.T.Helper()
	evs, err := k.Store.(store.OutboxStore).Events(k.Ctx, 1000)
	if err != nil {
		k.T.Fatal(err)
	}
	var out []map[string]any
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == typ {
			out = append(out, storetest.EventData(k.T, k.Store, evs[i].ID))
		}
	}
	return out
}

// StartRotation creates a client used from ips on its first secret, then
// rotates it with a day's grace, and returns the old and the new secret.
func (k Rotation) StartRotation(clientID string, ips ...string) (old, newest string) {
	k.T.Helper()
	k.MustClient(clientID)
	old = k.MustGenerate(clientID).Secret.ID
	for _, ip := range ips {
		k.Use(clientID, old, ip)
	}
	k.Clock.Add(time.Minute)
	ns, err := k.Svc.RotateSecret(k.Ctx, Root, clientID, 24*time.Hour)
	if err != nil {
		k.T.Fatal(err)
	}
	return old, ns.Secret.ID
}
