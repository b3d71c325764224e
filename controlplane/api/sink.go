package api

import (
	"errors"
	"net/http"
	"time"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/sink"
	"github.com/rotagate/rotagate/controlplane/store"
)

// Sink is a client's delivery sink as GET and PUT
// /v1/clients/{client_id}/sink answer it (SPEC §15): its configuration,
// and the webhook sink's signing secret only in the PUT answer that made
// it.
type Sink struct {
	sink.Config
	CreatedAt     time.Time `json:"created_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	SigningSecret string    `json:"signing_secret,omitempty"`
}

func toSinkJSON(k rules.Sink) Sink {
	return Sink{Config: k.Config, CreatedAt: k.CreatedAt.UTC(), UpdatedAt: k.UpdatedAt.UTC(), SigningSecret: k.SigningSecret}
}

func (a *API) getSink(r *http.Request, who rules.Actor) (any, error) {
	k, err := a.svc.GetSink(r.Context(), who, r.PathValue("client_id"))
	if errors.Is(err, store.ErrNotFound) {
		if _, cerr := a.svc.VisibleClient(r.Context(), who, r.PathValue("client_id")); cerr == nil {
			return nil, &apiError{status: http.StatusNotFound, code: "not_found", desc: "the client has no sink"}
		}
	}
	if err != nil {
		return nil, err
	}
	return toSinkJSON(k), nil
}

// putSink sets the client's sink from a sink.Config; the rules refuse a
// bad one naming the field (400).
func (a *API) putSink(r *http.Request, who rules.Actor, cfg sink.Config) (any, error) {
	return reply(toSinkJSON)(a.svc.SetSink(r.Context(), who, r.PathValue("client_id"), cfg))
}

func (a *API) deleteSink(r *http.Request, who rules.Actor) (any, error) {
	if err := a.svc.DeleteSink(r.Context(), who, r.PathValue("client_id")); err != nil {
		return nil, err
	}
	return answer{status: http.StatusNoContent}, nil
}
