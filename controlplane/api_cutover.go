package controlplane

import (
	"net/http"
	"time"

	"github.com/rotagate/rotagate/controlplane/cutover"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
)

// JSON shapes of the cut-over endpoint (SPEC §14, docs/cutover.md).
type (
	// cutoverJSON is a client's cut-over policy in force and the state
	// of each of its older active secrets.
	cutoverJSON struct {
		ClientID       string              `json:"client_id"`
		Auto           bool                `json:"auto"`
		Quiet          string              `json:"quiet"`
		Lookback       string              `json:"lookback"`
		Deadline       string              `json:"deadline"`
		OnDeadline     string              `json:"on_deadline"`
		NewestSecretID *string             `json:"newest_secret_id"`
		Secrets        []cutoverSecretJSON `json:"secrets"`
	}
	cutoverSecretJSON struct {
		SecretID   string     `json:"secret_id"`
		State      string     `json:"state"`
		NotMoved   []string   `json:"not_moved"`
		Moved      []string   `json:"moved"`
		Unlisted   bool       `json:"unlisted_callers"`
		NewestUsed bool       `json:"newest_used"`
		LastUsedAt *time.Time `json:"last_used_at"`
		QuietUntil *time.Time `json:"quiet_until"`
		DeadlineAt *time.Time `json:"deadline_at"`
	}
	// putCutoverRequest changes the fields it has; the others stay.
	putCutoverRequest struct {
		Auto       *bool   `json:"auto"`
		Quiet      *string `json:"quiet"`
		Lookback   *string `json:"lookback"`
		Deadline   *string `json:"deadline"`
		OnDeadline *string `json:"on_deadline"`
	}
)

func toCutoverJSON(st rules.CutoverState) cutoverJSON {
	p := st.Policy
	out := cutoverJSON{
		ClientID: st.ClientID, Auto: p.Auto, Quiet: cutover.FormatDuration(p.Quiet), Lookback: cutover.FormatDuration(p.Lookback),
		Deadline: cutover.FormatDuration(p.Deadline), OnDeadline: string(p.OnDeadline), Secrets: make([]cutoverSecretJSON, 0, len(st.Secrets)),
	}
	if st.Newest != "" {
		out.NewestSecretID = &st.Newest
	}
	for _, v := range st.Secrets {
		out.Secrets = append(out.Secrets, cutoverSecretJSON{
			SecretID: v.SecretID, State: string(v.State), NotMoved: nonEmpty(v.NotMoved), Moved: nonEmpty(v.Moved),
			Unlisted: v.Unlisted, NewestUsed: !v.NewestUnused,
			LastUsedAt: timePtr(v.LastUsedAt), QuietUntil: timePtr(v.QuietUntil), DeadlineAt: timePtr(v.DeadlineAt),
		})
	}
	return out
}

func nonEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// timePtr is nil for the zero time (JSON null).
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (a *API) getCutover(r *http.Request, who rules.Actor) (any, error) {
	st, err := a.svc.GetCutover(r.Context(), who, r.PathValue("client_id"))
	if err != nil {
		return nil, err
	}
	return toCutoverJSON(st), nil
}

func (a *API) putCutover(r *http.Request, who rules.Actor) (any, error) {
	var req putCutoverRequest
	if err := decode(r, &req, false); err != nil {
		return nil, err
	}
	change, err := req.change()
	if err != nil {
		return nil, err
	}
	st, err := a.svc.SetCutover(r.Context(), who, r.PathValue("client_id"), change)
	if err != nil {
		return nil, err
	}
	return toCutoverJSON(st), nil
}

// change reads the request's fields into a policy change; a bad value is
// 400 invalid_request naming its field.
func (req putCutoverRequest) change() (store.CutoverPolicy, error) {
	change := store.CutoverPolicy{Auto: req.Auto}
	for _, f := range []struct {
		name string
		in   *string
		out  **time.Duration
	}{{"quiet", req.Quiet, &change.Quiet}, {"lookback", req.Lookback, &change.Lookback}, {"deadline", req.Deadline, &change.Deadline}} {
		if f.in == nil {
			continue
		}
		d, err := cutover.ParseDuration(f.name, *f.in)
		if err != nil {
			return store.CutoverPolicy{}, badRequest("%s", err.Error())
		}
		*f.out = &d
	}
	if req.OnDeadline != nil {
		if od := cutover.OnDeadline(*req.OnDeadline); od != cutover.Keep && od != cutover.Revoke {
			return store.CutoverPolicy{}, badRequest(`on_deadline must be "keep" or "revoke"`)
		}
		change.OnDeadline = *req.OnDeadline
	}
	return change, nil
}
