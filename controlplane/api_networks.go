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

func (a *API) getNetworks(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	c, err := a.svc.VisibleClient(r.Context(), who, r.PathValue("client_id"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toNetworksJSON(c))
}

func (a *API) putNetworks(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	var req putNetworksRequest
	if !a.decode(w, r, &req, false) {
		return
	}
	if req.AllowedCIDRs == nil {
		writeError(w, http.StatusBadRequest, "invalid_request", `allowed_cidrs is required (a list of CIDR prefixes; [] allows anywhere)`)
		return
	}
	c, err := a.svc.SetNetworks(r.Context(), who, r.PathValue("client_id"), *req.AllowedCIDRs, req.ReportOnly)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, toNetworksJSON(c))
}

func (a *API) suggestNetworks(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	var req suggestRequest
	if !a.decode(w, r, &req, true) {
		return
	}
	var within time.Duration
	if req.Within != nil {
		var ok bool
		if within, ok = parseDuration(w, "within", *req.Within); !ok {
			return
		}
	}
	sug, err := a.svc.SuggestNetworks(r.Context(), who, r.PathValue("client_id"), within)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, suggestionJSON{AllowedCIDRs: sug.CIDRs, Callers: sug.Callers, UnlistedRequests: sug.Unlisted})
}

func (a *API) listCallers(w http.ResponseWriter, r *http.Request, who rules.Actor) {
	sc, err := a.svc.ListCallers(r.Context(), who, r.PathValue("client_id"), r.PathValue("secret_id"))
	if err != nil {
		a.fail(w, r, err)
		return
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
	writeJSON(w, http.StatusOK, out)
}

func toCallerJSON(c store.Caller) callerJSON {
	return callerJSON{IP: c.IP, FirstSeen: c.FirstSeen.UTC(), LastSeen: c.LastSeen.UTC(), Requests: c.Requests, Refused: c.Refused}
}
