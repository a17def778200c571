package core

import "context"

// Watch's steps, for tests that drive them with a fake clock instead of
// its ticker.

func (s *Service) RenewLeasesNow(ctx context.Context) { s.renewLeases(ctx) }

func (s *Service) ReclaimNow(ctx context.Context) ([]Job, error) { return s.reclaim(ctx) }
