package controlplane

import (
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
	"net/http"
	"time"
)

// JSON shapes of the callers and networks endpoints.
type (
	networksJSON struct {
		AllowedCIDRs []string `json:"allowed_cidrs"`
		ReportOnly   bool     `json:"report_only"`
	}
	putNetworksRequest struct {
		// AllowedCIDRs is required: [] allows anywhere.
		AllowedCIDRs *[]string `json:"allowed_cidrs"`
		ReportOnly   bool      `json:"report_only"`
	}
	suggestRequest struct {
		Within *string `json:"within"`
	}
	suggestionJSON struct {
		AllowedCIDRs     []string `json:"allowed_cidrs"`
		Callers          int      `json:"callers"`
		UnlistedRequests int64    `json:"unlisted_requests"`
	}
	callerJSON struct {
		IP        string    `json:"ip,omitempty"`
		FirstSeen time.Time `json:"first_seen"`
		LastSeen  time.Time `json:"last_seen"`
		Requests  int64     `json:"requests"`
		Refused   int64     `json:"refused"`
		// OnNewest and Moved are null for the newest secret itself.
		OnNewest *bool `json:"on_newest,omitempty"`
		Moved    *bool `json:"moved,omitempty"`
	}
	callersJSON struct {
		SecretID       string       `json:"secret_id"`
		NewestSecretID *string      `json:"newest_secret_id"`
		Window         string       `json:"window"`
		Callers        []callerJSON `json:"callers"`
		Unlisted       *callerJSON  `json:"unlisted"`
	}
)

func toNetworksJSON(c store.Client) networksJSON {
	cidrs := c.AllowedCIDRs
	if cidrs == nil {
		cidrs = []string{}
	}
	return networksJSON{AllowedCIDRs: cidrs, ReportOnly: c.NetworksReportOnly}
}

func (a *API) getNetworks(r *http.Request, who rules.Actor) (any, error) {
	c, err := a.svc.VisibleClient(r.Context(), who, r.PathValue("client_id"))
	if err != nil {
		return nil, err
	}
	return toNetworksJSON(c), nil
}

func (a *API) putNetworks(r *http.Request, who rules.Actor) (any, error) {
	var req putNetworksRequest
	if err := decode(r, &req, false); err != nil {
		return nil, err
	}
	if req.AllowedCIDRs == nil {
		return nil, badRequest(`allowed_cidrs is required (a list of CIDR prefixes; [] allows anywhere)`)
	}
	c, err := a.svc.SetNetworks(r.Context(), who, r.PathValue("client_id"), *req.AllowedCIDRs, req.ReportOnly)
	if err != nil {
		return nil, err
	}
	return toNetworksJSON(c), nil
}

func (a *API) suggestNetworks(r *http.Request, who rules.Actor) (any, error) {
	var req suggestRequest
	if err := decode(r, &req, true); err != nil {
		return nil, err
	}
	var within time.Duration
	if req.Within != nil {
		var err error
		if within, err = parseDuration("within", *req.Within); err != nil {
			return nil, err
		}
	}
	sug, err := a.svc.SuggestNetworks(r.Context(), who, r.PathValue("client_id"), within)
	if err != nil {
		return nil, err
	}
	return suggestionJSON{AllowedCIDRs: sug.CIDRs, Callers: sug.Callers, UnlistedRequests: sug.Unlisted}, nil
}

func (a *API) listCallers(r *http.Request, who rules.Actor) (any, error) {
	sc, err := a.svc.ListCallers(r.Context(), who, r.PathValue("client_id"), r.PathValue("secret_id"))
	if err != nil {
		return nil, err
	}
	out := callersJSON{SecretID: sc.Secret.ID, Window: a.svc.TombstoneWindow().String(), Callers: make([]callerJSON, 0, len(sc.Callers))}
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

func toCallerJSON(c store.Caller) callerJSON {
	return callerJSON{IP: c.IP, FirstSeen: c.FirstSeen.UTC(), LastSeen: c.LastSeen.UTC(), Requests: c.Requests, Refused: c.Refused}
}
