package core

import (
	"context"
	"strings"
)

// The directory of users the bot has seen, kept with its own settings in
// the ledger: platforms have no lookup by @handle (Telegram's Bot API has
// none), and audits should name people after a restart too.
const (
	userNamePrefix   = "user.name:"   // + user key → display name
	userHandlePrefix = "user.handle:" // + platform:lowercase handle → user key
)

// SeeUser records u's display name and, when it has one, their handle.
func (s *Service) SeeUser(ctx context.Context, u User, handle string) error {
	err := s.store.Update(ctx, func(tx Tx) error {
		if err := tx.PutSetting(userNamePrefix+u.Key(), Truncate(u.Name, 64)); err != nil {
			return err
		}
		if handle == "" {
			return nil
		}
		return tx.PutSetting(userHandlePrefix+string(u.Platform)+":"+strings.ToLower(handle), u.Key())
	})
	return wrapStore("see user", err)
}

// FindUser returns the key and name of the user last seen with handle on
// platform.
func (s *Service) FindUser(ctx context.Context, platform Platform, handle string) (key, name string, ok bool, err error) {
	err = s.store.View(ctx, func(tx Tx) error {
		var err error
		if key, ok, err = tx.Setting(userHandlePrefix + string(platform) + ":" + strings.ToLower(handle)); err != nil || !ok {
			return err
		}
		name, _, err = tx.Setting(userNamePrefix + key)
		return err
	})
	return key, name, ok, wrapStore("find user", err)
}

// UserName is the display name last seen for the user key, or "".
func (s *Service) UserName(ctx context.Context, key string) (string, error) {
	var name string
	err := s.store.View(ctx, func(tx Tx) error {
		var err error
		name, _, err = tx.Setting(userNamePrefix + key)
		return err
	})
	return name, wrapStore("user name", err)
}
