package main

import (
	"fmt"
	"regexp"
	"strings"
)

// The quota scopes and user keys the adapters use, as operators type them
// in quotas.scopes and `imaginebot quota`: a typo must be refused, not
// become an account nobody will ever use.
var (
	scopeForms = []struct {
		re   *regexp.Regexp
		form string
	}{
		{regexp.MustCompile(`^telegram:private$`), "telegram:private"},
		{regexp.MustCompile(`^telegram:group:-?[1-9][0-9]{0,19}$`), "telegram:group:<chat id>"},
		{regexp.MustCompile(`^discord:guild:[1-9][0-9]{4,19}$`), "discord:guild:<server id>"},
		{regexp.MustCompile(`^discord:dm$`), "discord:dm"},
	}
	userKeyRe = regexp.MustCompile(`^(telegram|discord):[1-9][0-9]{0,19}$`)
)

// checkScope explains why s is not a scope, or returns nil.
func checkScope(s string) error {
	for _, f := range scopeForms {
		if f.re.MatchString(s) {
			return nil
		}
	}
	forms := make([]string, len(scopeForms))
	for i, f := range scopeForms {
		forms[i] = f.form
	}
	return fmt.Errorf("%q is not a scope; use %s", s, strings.Join(forms, ", "))
}

// checkUserKey explains why s is not a user key, or returns nil.
func checkUserKey(s string) error {
	if userKeyRe.MatchString(s) {
		return nil
	}
	return fmt.Errorf("%q is not a user; use telegram:<user id> or discord:<user id> (a bare id takes the scope's platform)", s)
}
