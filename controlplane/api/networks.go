package api

import (
	"net/http"
	"time"

	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
)

// JSON shapes of the callers and networks endpoints.
type (
	Networks struct {
		AllowedCIDRs []string `json:"allowed_cidrs"`
		ReportOnly   bool     `json:"report_only"`
	}
	PutNetworksRequest struct {
		// AllowedCIDRs is required: [] allows anywhere.
		AllowedCIDRs *[]string `json:"allowed_cidrs"`
		ReportOnly   bool      `json:"report_only"`
	}
	SuggestRequest struct {
		Within *string `json:"within"`
	}
	Suggestion struct {
		AllowedCIDRs     []string `json:"allowed_cidrs"`
		Callers          int      `json:"callers"`
		UnlistedRequests int64    `json:"unlisted_requests"`
	}
	Caller struct {
		IP        string    `json:"ip,omitempty"`
		FirstSeen time.Time `json:"first_seen"`
		LastSeen  time.Time `json:"last_seen"`
		Requests  int64     `json:"requests"`
		Refused   int64     `json:"refused"`
		// OnNewest and Moved are null for the newest secret itself.
		OnNewest *bool `json:"on_newest,omitempty"`
		Moved    *bool `json:"moved,omitempty"`
	}
	Callers struct {
		SecretID       string   `json:"secret_id"`
		NewestSecretID *string  `json:"newest_secret_id"`
		Window         string   `json:"window"`
		Callers        []Caller `json:"callers"`
		Unlisted       *Caller  `json:"unlisted"`
	}
)

func toNetworksJSON(c store.Client) Networks {
	cidrs := c.AllowedCIDRs
	if cidrs == nil {
		cidrs = []string{}
	}
	return Networks{AllowedCIDRs: cidrs, ReportOnly: c.NetworksReportOnly}
}

func (a *API) getNetworks(r *http.Request, who rules.Actor) (any, error) {
	return reply(toNetworksJSON)(a.svc.VisibleClient(r.Context(), who, r.PathValue("client_id")))
}

func (a *API) putNetworks(r *http.Request, who rules.Actor, req PutNetworksRequest) (any, error) {
	if req.AllowedCIDRs == nil {
		return nil, badRequest(`allowed_cidrs is required (a list of CIDR prefixes; [] allows anywhere)`)
	}
	return reply(toNetworksJSON)(a.svc.SetNetworks(r.Context(), who, r.PathValue("client_id"), *req.AllowedCIDRs, req.ReportOnly))
}

func (a *API) suggestNetworks(r *http.Request, who rules.Actor, req SuggestRequest) (any, error) {
	within, err := optionalDuration("within", req.Within)
	if err != nil {
		return nil, err
	}
	sug, err := a.svc.SuggestNetworks(r.Context(), who, r.PathValue("client_id"), within)
	if err != nil {
		return nil, err
	}
	return Suggestion{AllowedCIDRs: sug.CIDRs, Callers: sug.Callers, UnlistedRequests: sug.Unlisted}, nil
}

func (a *API) listCallers(r *http.Request, who rules.Actor) (any, error) {
	sc, err := a.svc.ListCallers(r.Context(), who, r.PathValue("client_id"), r.PathValue("secret_id"))
	if err != nil {
		return nil, err
	}
	out := Callers{SecretID: sc.Secret.ID, Window: a.svc.TombstoneWindow().String(), Callers: make([]Caller, 0, len(sc.Callers))}
	if sc.Newest != "" {
		out.NewestSecretID = &sc.Newest
	}
	for _, c := range sc.Callers {
		cj := toCallerJSON(c.Caller)
		if sc.Newest != "" && sc.Newest != sc.Secret.ID {
			cj.OnNewest, cj.Moved = &c.OnNewest, &c.Moved
		}
		out.Callers = append(out.Callers, cj)
	}
	if sc.Unlisted != nil {
		u := toCallerJSON(*sc.Unlisted)
		out.Unlisted = &u
	}
	return out, nil
}

func toCallerJSON(c store.Caller) Caller {
	return Caller{IP: c.IP, FirstSeen: c.FirstSeen.UTC(), LastSeen: c.LastSeen.UTC(), Requests: c.Requests, Refused: c.Refused}
}
