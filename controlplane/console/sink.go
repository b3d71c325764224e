package console

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/sink"
	"github.com/rotagate/rotagate/controlplane/store"
)

// The console's Sink panel on a client's page: the sink's kind, target
// and schedule, a form taking the sink as JSON (what the API's PUT
// takes), and Remove sink. A new webhook sink's signing secret is shown
// once, on the page that answers the form.

// sinkPanel is the panel's view-model; Kind is empty when there is no
// sink.
type sinkPanel struct {
	Frame       frame
	ClientPath  string
	Kind        string
	Target      string
	RotateEvery string
	// Config is the sink's JSON, to edit in the form.
	Config string
}

// sinkSetView is the page that shows a new signing secret once.
type sinkSetView struct {
	Frame                               frame
	ClientID, ClientPath, SigningSecret string
}

func (c *Console) sinkPanel(r *http.Request, who rules.Actor, fr frame, clientID string) (sinkPanel, error) {
	v := sinkPanel{Frame: fr, ClientPath: consoleClientPath(clientID)}
	k, err := c.svc.GetSink(r.Context(), who, clientID)
	if errors.Is(err, store.ErrNotFound) {
		return v, nil
	}
	if err != nil {
		return v, err
	}
	cfg, err := json.MarshalIndent(k.Config, "", "  ")
	if err != nil {
		return v, err
	}
	v.Kind, v.RotateEvery, v.Config, v.Target = k.Config.Kind, k.Config.RotateEvery, string(cfg), k.Config.URL
	if k.Config.Kind == sink.KindAWSSecretsManager {
		v.Target = k.Config.SecretID + " (" + k.Config.Region + ")"
	}
	return v, nil
}

// saveSink sets the client's sink from the form's JSON.
func (c *Console) saveSink(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	id := r.PathValue("client_id")
	var cfg sink.Config
	raw := []byte(strings.TrimSpace(r.PostForm.Get("config")))
	if len(raw) == 0 {
		c.errorPage(w, r, fr, http.StatusBadRequest, "Bad request", "Give the sink as JSON.")
		return
	}
	if err := api.DecodeStrict(raw, &cfg); err != nil {
		c.errorPage(w, r, fr, http.StatusBadRequest, "Bad request", "The sink is not valid JSON: "+err.Error())
		return
	}
	k, err := c.svc.SetSink(r.Context(), who, id, cfg)
	if err != nil {
		c.fail(w, r, fr, err)
		return
	}
	if k.SigningSecret == "" {
		redirect(w, r, consoleClientPath(id), "sink")
		return
	}
	c.render(w, r, http.StatusOK, "sinkset", sinkSetView{Frame: fr, ClientID: id, ClientPath: consoleClientPath(id), SigningSecret: k.SigningSecret})
}

func (c *Console) deleteSink(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	id := r.PathValue("client_id")
	if err := c.svc.DeleteSink(r.Context(), who, id); err != nil {
		c.fail(w, r, fr, err)
		return
	}
	redirect(w, r, consoleClientPath(id), "unsunk")
}
