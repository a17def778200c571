package core

import (
	"context"
	"fmt"
)

// Prefs returns the user's own settings in the scope.
func (s *Service) Prefs(ctx context.Context, k AccountKey) (Prefs, error) {
	var p Prefs
	err := s.store.View(ctx, func(tx Tx) error {
		a, err := tx.Account(k)
		p = a.Prefs
		return err
	})
	return p, wrapStore("prefs", err)
}

// SetPrefs replaces the user's own settings in the scope. Anyone may set
// their own; nothing else changes, so it is not audited. The model must be
// configured and the aspect well formed; the language is the adapter's to
// check (it knows its catalogue).
func (s *Service) SetPrefs(ctx context.Context, k AccountKey, p Prefs) (Prefs, error) {
	if k.Scope == "" || k.User == "" {
		return Prefs{}, &Error{Code: CodeInvalidArgument, Err: fmt.Errorf("core: prefs: empty account %q", k)}
	}
	if p.Model != "" {
		if _, ok := s.models[p.Model]; !ok {
			names := make([]string, 0, len(s.models))
			for _, m := range s.Models() {
				names = append(names, m.Name)
			}
			return Prefs{}, &Error{Code: CodeUnknownModel, Option: OptionModel, Value: Truncate(p.Model, 40), Choices: names}
		}
	}
	if p.Aspect != "" && !ValidAspect(p.Aspect) {
		return Prefs{}, &Error{Code: CodeInvalidOption, Reason: ReasonMalformed, Option: OptionAspect, Value: Truncate(p.Aspect, 40)}
	}
	err := s.store.Update(ctx, func(tx Tx) error {
		a, err := tx.Account(k)
		if err != nil {
			return err
		}
		a.Key, a.Prefs = k, p
		return tx.PutAccount(a)
	})
	if err != nil {
		return Prefs{}, wrapStore("prefs", err)
	}
	s.log.Info("settings changed", "account", k.String(), "model", p.Model, "aspect", p.Aspect, "lang", p.Lang)
	return p, nil
}

// applyPrefs fills what the request leaves open from the user's settings. A
// model the settings name that is no longer configured is ignored: the
// default serves, rather than every prompt failing.
func (s *Service) applyPrefs(ctx context.Context, req *Request) error {
	if req.AsIs || req.Scope == "" || req.User.ID == "" || (req.Model != "" && req.Options.Aspect != "") {
		return nil
	}
	p, err := s.Prefs(ctx, AccountKey{Scope: req.Scope, User: req.User.Key()})
	if err != nil {
		return err
	}
	if _, ok := s.models[p.Model]; req.Model == "" && ok {
		req.Model = p.Model
	}
	if req.Options.Aspect == "" && p.Aspect != "" {
		// A saved aspect the chosen model cannot make is left out, rather
		// than refusing every prompt to that model.
		name := req.Model
		if name == "" {
			name = s.cfg.DefaultModel
		}
		if m, ok := s.models[name]; !ok || m.CheckOptions(Options{Aspect: p.Aspect}) == nil {
			req.Options.Aspect = p.Aspect
		}
	}
	return nil
}
