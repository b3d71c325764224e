package console

import (
	"net/http"

	"github.com/rotagate/rotagate/controlplane/api"
	"github.com/rotagate/rotagate/controlplane/cutover"
	"github.com/rotagate/rotagate/controlplane/rules"
	"github.com/rotagate/rotagate/controlplane/store"
)

// The console's cut-over (docs/cutover.md): on My clients, how many
// callers of a rotation in progress have moved; on a client's page, the
// Cut-over panel with the callers not moved yet, the quiet and deadline
// times, and the switch that turns the automatic cut-over on or off (a
// form POST, working without JavaScript).

// cutoverProgress is a rotation in progress on My clients.
type cutoverProgress struct{ Moved, Callers int }

// progressOf adds up the callers, moved or not, of a client's older
// secrets; nil when no rotation is in progress.
func progressOf(st rules.CutoverState) *cutoverProgress {
	if len(st.Secrets) == 0 {
		return nil
	}
	p := &cutoverProgress{}
	for _, v := range st.Secrets {
		p.Moved += len(v.Moved)
		p.Callers += len(v.Moved) + len(v.NotMoved)
	}
	return p
}

// cutoverView is the client page's Cut-over panel.
type cutoverView struct {
	Path, CSRF                            string
	Auto                                  bool
	Quiet, Lookback, Deadline, OnDeadline string
	Secrets                               []cutoverSecretView
}

type cutoverSecretView struct {
	ID, Hint, State, Summary string
	NotMoved                 []string
	QuietUntil, DeadlineAt   *when
}

func newCutoverView(fr frame, path string, st rules.CutoverState, secrets []store.Secret) cutoverView {
	p := st.Policy
	v := cutoverView{Path: path, CSRF: fr.CSRF, Auto: p.Auto, Quiet: cutover.FormatDuration(p.Quiet), Lookback: cutover.FormatDuration(p.Lookback),
		Deadline: cutover.FormatDuration(p.Deadline), OnDeadline: string(p.OnDeadline)}
	if p.Deadline == 0 {
		v.Deadline = "none"
	}
	hints := map[string]string{}
	for _, s := range secrets {
		hints[s.ID] = s.Hint
	}
	for _, vd := range st.Secrets {
		j := api.NewCutover(rules.CutoverState{Policy: p, Secrets: []cutover.Verdict{vd}}).Secrets[0]
		v.Secrets = append(v.Secrets, cutoverSecretView{ID: vd.SecretID, Hint: hints[vd.SecretID], State: string(vd.State),
			Summary: j.Summary(p.Auto), NotMoved: vd.NotMoved, QuietUntil: at(j.QuietUntil), DeadlineAt: at(j.DeadlineAt)})
	}
	return v
}

// saveCutover sets the automatic cut-over on or off from the panel's form.
func (c *Console) saveCutover(w http.ResponseWriter, r *http.Request, who rules.Actor, fr frame) {
	clientID := r.PathValue("client_id")
	auto := r.PostForm.Get("auto") == "on"
	if _, err := c.svc.SetCutover(r.Context(), who, clientID, store.CutoverPolicy{Auto: &auto}); err != nil {
		c.fail(w, r, fr, err)
		return
	}
	redirect(w, r, consoleClientPath(clientID), "cutover")
}
